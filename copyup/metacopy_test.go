package copyup_test

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cowfs/cowfs/copyup"
	"github.com/cowfs/cowfs/lookup"
	"golang.org/x/sys/unix"
)

const metacopyAttr = "trusted.overlay.metacopy"

// makeLower writes a lower file f of size bytes with data at two places (holes between),
// owner 1000:1001, mode 04755, a capability and a user xattr, and old times.
func makeLower(t *testing.T, e *env, size int64) (string, []byte) {
	t.Helper()
	src := filepath.Join(e.lower, "f")
	rng := rand.New(rand.NewPCG(3, 4))
	f, err := os.Create(src)
	must(t, err)
	must(t, f.Truncate(size))
	for _, off := range []int64{0, size / 2} {
		b := make([]byte, min(64<<10, size-off))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		_, err := f.WriteAt(b, off)
		must(t, err)
	}
	must(t, f.Close())
	must(t, os.Lchown(src, 1000, 1001))
	must(t, unix.Chmod(src, 0o4755))
	must(t, unix.Lsetxattr(src, "security.capability", []byte(capability()), 0))
	must(t, unix.Lsetxattr(src, "user.a", []byte("1"), 0))
	setTimes(t, src, oldTime)
	want, err := os.ReadFile(src)
	must(t, err)
	return src, want
}

func TestMetaCopiesEverythingButTheData(t *testing.T) {
	for _, size := range []int64{0, 1, 3*mib + 5} {
		t.Run(sizeName(size), func(t *testing.T) {
			e := newEnv(t)
			src, _ := makeLower(t, e, size)
			s := lstat(t, src)
			must(t, e.c.File(copyup.Source{Layer: lowerLayer, Rel: "f", Ino: 777, Meta: true}))
			dst := filepath.Join(e.upper, "f")
			d := lstat(t, dst)
			if d.Mode != s.Mode || d.Uid != 1000 || d.Gid != 1001 || d.Size != s.Size || d.Mtim != s.Mtim || d.Atim != s.Atim {
				t.Errorf("copy mode %o uid %d gid %d size %d mtime %v; want the source's %o 1000 1001 %d %v",
					d.Mode, d.Uid, d.Gid, d.Size, d.Mtim, s.Mode, s.Size, s.Mtim)
			}
			if ex := extents(t, dst); len(ex) != 0 {
				t.Errorf("a metadata-only copy holds data %v", ex)
			}
			x := xattrs(t, dst)
			if v, ok := x[metacopyAttr]; !ok || v != "" {
				t.Errorf("%s = %q, %v; want present and empty (the kernel's value)", metacopyAttr, v, ok)
			}
			if x["security.capability"] != capability() || x["user.a"] != "1" {
				t.Errorf("xattrs of the copy %q lack the source's", x)
			}
			if x["trusted."+lookup.OriginXattr] != string(lookup.EncodeOrigin(777, 0)) {
				t.Errorf("origin not recorded: %q", x)
			}
			assertEmptyDir(t, e.work)
		})
	}
}

func sizeName(n int64) string {
	switch n {
	case 0:
		return "an empty file"
	case 1:
		return "a one-byte file"
	}
	return "a multi-MiB file with holes"
}

func TestDataCompletesAMetacopyFileInPlace(t *testing.T) {
	for _, size := range []int64{0, 1, 3*mib + 5} {
		t.Run(sizeName(size), func(t *testing.T) {
			e := newEnv(t)
			src, want := makeLower(t, e, size)
			must(t, e.c.File(copyup.Source{Layer: lowerLayer, Rel: "f", Meta: true}))
			dst := filepath.Join(e.upper, "f")
			// What a chmod after the metadata copy-up leaves: no write permission.
			must(t, unix.Chmod(dst, 0o4555))
			must(t, os.Link(dst, filepath.Join(e.upper, "g")))
			before := lstat(t, dst)
			must(t, e.c.Data("f", lowerLayer, false))
			got, err := os.ReadFile(filepath.Join(e.upper, "g"))
			must(t, err)
			if !bytes.Equal(got, want) {
				t.Errorf("the other link reads %d bytes unlike the lower's %d", len(got), len(want))
			}
			if se, de := extents(t, src), extents(t, dst); !slices.Equal(se, de) {
				t.Errorf("data map %v, lower's %v", de, se)
			}
			d := lstat(t, dst)
			if d.Ino != before.Ino || d.Mode != before.Mode || d.Uid != 1000 || d.Mtim != before.Mtim || d.Size != before.Size {
				t.Errorf("after: ino %d mode %o uid %d mtime %v size %d; want %d %o 1000 %v %d (in place, metadata kept)",
					d.Ino, d.Mode, d.Uid, d.Mtim, d.Size, before.Ino, before.Mode, before.Mtim, before.Size)
			}
			x := xattrs(t, dst)
			if _, ok := x[metacopyAttr]; ok {
				t.Errorf("%s is still set", metacopyAttr)
			}
			if x["security.capability"] != capability() {
				t.Errorf("security.capability lost: %q", x)
			}
			assertEmptyDir(t, e.work)
		})
	}
}

func TestDataWithoutDataEmptiesTheFileAndDropsTheMarker(t *testing.T) {
	e := newEnv(t)
	makeLower(t, e, 1<<20)
	must(t, e.c.File(copyup.Source{Layer: lowerLayer, Rel: "f", Meta: true}))
	must(t, e.c.Data("f", lowerLayer, true))
	dst := filepath.Join(e.upper, "f")
	if st, ex := lstat(t, dst), extents(t, dst); st.Size != 0 || len(ex) != 0 {
		t.Errorf("after Data without data: size %d, data %v; want an empty file", st.Size, ex)
	}
	if _, ok := xattrs(t, dst)[metacopyAttr]; ok {
		t.Errorf("%s is still set", metacopyAttr)
	}
}

func TestDataOfAFileThatIsNotMetacopyFails(t *testing.T) {
	e := newEnv(t)
	must(t, os.Mkdir(filepath.Join(e.upper, "d"), 0o755))
	if err := e.c.Data("d", lowerLayer, false); err == nil {
		t.Error("Data of a directory succeeded")
	}
	if err := e.c.Data("missing", lowerLayer, false); err == nil {
		t.Error("Data of a missing file succeeded")
	}
}
