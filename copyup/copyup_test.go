package copyup_test

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cowfs/cowfs/copyup"
	"github.com/cowfs/cowfs/lookup"
	"golang.org/x/sys/unix"
)

const mib = 1 << 20

func TestFileData(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	tests := []struct {
		name    string
		size    int64
		extents map[int64][]byte // data at offsets; holes elsewhere
	}{
		{"an empty file stays empty", 0, nil},
		{"a one-byte file", 1, map[int64][]byte{0: []byte("x")}},
		{"a multi-MiB file of random bytes", 5*mib + 123, map[int64][]byte{0: random(5*mib + 123)}},
		{"holes between data extents stay holes", 8 * mib, map[int64][]byte{0: random(4096), 3 * mib: random(64 << 10), 7*mib + 4096: random(8192)}},
		{"a leading hole stays a hole", 2 * mib, map[int64][]byte{mib: random(mib)}},
		{"a file of only a hole stays all hole", 3 * mib, nil},
		{"a trailing hole keeps the size", 4*mib + 17, map[int64][]byte{4096: random(100)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			src := filepath.Join(e.lower, "f")
			f, err := os.Create(src)
			must(t, err)
			must(t, f.Truncate(tt.size))
			for off, b := range tt.extents {
				_, err := f.WriteAt(b, off)
				must(t, err)
			}
			must(t, f.Sync())
			must(t, f.Close())
			must(t, e.c.File(copyup.Source{Layer: lowerLayer, Rel: "f"}))
			dst := filepath.Join(e.upper, "f")
			want, err := os.ReadFile(src)
			must(t, err)
			got, err := os.ReadFile(dst)
			must(t, err)
			if !bytes.Equal(got, want) {
				t.Errorf("copy differs: %d bytes, want %d", len(got), len(want))
			}
			if se, de := extents(t, src), extents(t, dst); !slices.Equal(se, de) {
				t.Errorf("data map of the copy %v, of the source %v", de, se)
			}
			if s, d := lstat(t, src), lstat(t, dst); d.Blocks > s.Blocks {
				t.Errorf("copy uses %d blocks, source %d", d.Blocks, s.Blocks)
			}
			assertEmptyDir(t, e.work)
		})
	}
}

func TestFileNoDataKeepsMetadataOnly(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(e.lower, "f")
	must(t, os.WriteFile(src, []byte("truncated by the caller"), 0o640))
	must(t, os.Lchown(src, 1000, 1000))
	must(t, unix.Chmod(src, 0o4750))
	setTimes(t, src, oldTime)
	must(t, e.c.File(copyup.Source{Layer: lowerLayer, Rel: "f", NoData: true}))
	st := lstat(t, filepath.Join(e.upper, "f"))
	if st.Size != 0 || st.Mode != unix.S_IFREG|0o4750 || st.Uid != 1000 || st.Mtim != lstat(t, src).Mtim {
		t.Errorf("copy: size %d mode %o uid %d mtime %v; want empty, 104750, 1000, the source's", st.Size, st.Mode, st.Uid, st.Mtim)
	}
}

// capability is a VFS_CAP_REVISION_2 security.capability granting CAP_NET_BIND_SERVICE.
func capability() string {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000000)
	binary.LittleEndian.PutUint32(b[4:], 1<<10)
	return string(b)
}

func TestFileMetadata(t *testing.T) {
	long := strings.Repeat("v", 3000) // longer than the first read buffer
	tests := []struct {
		name  string
		make  func(t *testing.T, p string)
		mode  uint32 // full st_mode expected on both sides
		xattr map[string]string
		// kept lists xattrs that must reach the copy, dropped those that must not.
		kept, dropped []string
		target        string // a symlink's
	}{
		{
			name: "a setuid file keeps its bits, owner and xattrs but not the lower's markers",
			make: func(t *testing.T, p string) { must(t, os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755)) },
			mode: unix.S_IFREG | 0o4755,
			xattr: map[string]string{
				"security.capability":             capability(),
				"user.a":                          "1",
				"user.long":                       long,
				"trusted.mine":                    "t",
				"trusted.overlay.overlay.opaque":  "escaped, a user's own",
				"trusted.overlay.origin":          "lower marker",
				"trusted.overlay.opaque":          "y",
				"user.overlay.whiteout":           "",
				"user.fuseoverlayfs.origin":       "lower marker",
				"trusted.cowfs.origin":            "12345678",
				"user.cowfs.anything":             "lower marker",
				"user.fuseoverlayfs.overlay.mine": "escaped, a user's own",
			},
			kept:    []string{"security.capability", "user.a", "user.long", "trusted.mine", "trusted.overlay.overlay.opaque", "user.fuseoverlayfs.overlay.mine"},
			dropped: []string{"trusted.overlay.origin", "trusted.overlay.opaque", "user.overlay.whiteout", "user.fuseoverlayfs.origin", "user.cowfs.anything"},
		},
		{
			name: "a setgid sticky file keeps its bits",
			make: func(t *testing.T, p string) { must(t, os.WriteFile(p, nil, 0o644)) },
			mode: unix.S_IFREG | 0o3710,
		},
		{
			name:   "a symlink keeps its target and owner",
			make:   func(t *testing.T, p string) { must(t, os.Symlink("../some/where", p)) },
			mode:   unix.S_IFLNK | 0o777,
			target: "../some/where",
		},
		{
			name:   "a symlink with a long target keeps all of it",
			make:   func(t *testing.T, p string) { must(t, os.Symlink(strings.Repeat("a/", 1000)+"end", p)) },
			mode:   unix.S_IFLNK | 0o777,
			target: strings.Repeat("a/", 1000) + "end",
		},
		{
			name:  "a fifo stays a fifo with its mode and xattrs",
			make:  func(t *testing.T, p string) { must(t, unix.Mkfifo(p, 0o600)) },
			mode:  unix.S_IFIFO | 0o640,
			xattr: map[string]string{"trusted.mine": "f"},
			kept:  []string{"trusted.mine"},
		},
		{
			name: "a char device keeps its numbers",
			make: func(t *testing.T, p string) { must(t, unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3)))) },
			mode: unix.S_IFCHR | 0o620,
		},
		{
			name: "a socket node stays a socket",
			make: func(t *testing.T, p string) { must(t, unix.Mknod(p, unix.S_IFSOCK|0o755, 0)) },
			mode: unix.S_IFSOCK | 0o751,
		},
	}
	for _, tt := range tests {
		for _, ino := range []uint64{0, 987654321} {
			name := tt.name
			if ino != 0 {
				name += " and records its origin"
			}
			t.Run(name, func(t *testing.T) {
				e := newEnv(t)
				src := filepath.Join(e.lower, "f")
				tt.make(t, src)
				must(t, os.Lchown(src, 1000, 1001))
				if tt.mode&unix.S_IFMT != unix.S_IFLNK {
					must(t, unix.Chmod(src, tt.mode&0o7777))
				}
				for k, v := range tt.xattr {
					must(t, unix.Lsetxattr(src, k, []byte(v), 0))
				}
				setTimes(t, src, oldTime)
				s := lstat(t, src) // before: reading the source may update its atime
				must(t, e.c.File(copyup.Source{Layer: lowerLayer, Rel: "f", Ino: ino}))
				dst := filepath.Join(e.upper, "f")
				d := lstat(t, dst)
				if s.Mode != tt.mode {
					t.Fatalf("fixture mode %o, want %o", s.Mode, tt.mode)
				}
				if d.Mode != s.Mode || d.Uid != 1000 || d.Gid != 1001 || d.Rdev != s.Rdev {
					t.Errorf("copy mode %o uid %d gid %d rdev %d; want %o 1000 1001 %d", d.Mode, d.Uid, d.Gid, d.Rdev, s.Mode, s.Rdev)
				}
				if d.Mtim != s.Mtim || d.Atim != s.Atim {
					t.Errorf("copy times a=%v m=%v; want the source's a=%v m=%v", d.Atim, d.Mtim, s.Atim, s.Mtim)
				}
				if tt.target != "" {
					if got, err := os.Readlink(dst); err != nil || got != tt.target {
						t.Errorf("copy points to %q (%v), want %q", got, err, tt.target)
					}
				}
				got := xattrs(t, dst)
				for _, k := range tt.kept {
					if got[k] != tt.xattr[k] {
						t.Errorf("xattr %s = %q on the copy, want %q", k, got[k], tt.xattr[k])
					}
				}
				for _, k := range tt.dropped {
					if v, ok := got[k]; ok {
						t.Errorf("lower marker %s = %q was copied", k, v)
					}
				}
				origin, hasOrigin := got["trusted."+lookup.OriginXattr]
				switch {
				case ino == 0 && hasOrigin:
					t.Errorf("origin %x recorded for Ino 0", origin)
				case ino != 0 && origin != string(lookup.EncodeOrigin(ino, 0)):
					t.Errorf("origin = %x, want %x", origin, lookup.EncodeOrigin(ino, 0))
				}
				assertEmptyDir(t, e.work)
			})
		}
	}
}

func TestFileRestoresParentTimes(t *testing.T) {
	e := newEnv(t)
	must(t, os.MkdirAll(filepath.Join(e.lower, "d"), 0o755))
	must(t, os.WriteFile(filepath.Join(e.lower, "d", "f"), []byte("x"), 0o644))
	must(t, os.Mkdir(filepath.Join(e.upper, "d"), 0o755))
	setTimes(t, filepath.Join(e.upper, "d"), oldTime)
	before := lstat(t, filepath.Join(e.upper, "d"))
	must(t, e.c.File(copyup.Source{Layer: lowerLayer, Rel: "d/f"}))
	if after := lstat(t, filepath.Join(e.upper, "d")); after.Mtim != before.Mtim {
		t.Errorf("upper parent mtime %v after copy-up, was %v", after.Mtim, before.Mtim)
	}
}

// Dir copies one directory up, its parent first (the fs copies ancestors through their
// nodes, top-down): owner, mode, xattrs but the lower's markers, origin and times, and
// nothing inside it; the parent's times stay.
func TestDir(t *testing.T) {
	e := newEnv(t)
	type meta struct {
		mode     uint32
		uid, gid int
	}
	dirs := map[string]meta{"a": {0o750, 1000, 1000}, "a/b": {0o2711, 1001, 1002}, "a/b/c": {0o1777, 0, 1003}}
	for _, rel := range []string{"a", "a/b", "a/b/c"} {
		p := filepath.Join(e.lower, rel)
		must(t, os.Mkdir(p, 0o700))
		must(t, os.Lchown(p, dirs[rel].uid, dirs[rel].gid))
		must(t, unix.Chmod(p, dirs[rel].mode))
		must(t, unix.Lsetxattr(p, "user.dir", []byte(rel), 0))
	}
	// The lower's markers belong to the lower stack, not to the directory.
	must(t, unix.Lsetxattr(filepath.Join(e.lower, "a/b"), "trusted.overlay.opaque", []byte("y"), 0))
	must(t, os.WriteFile(filepath.Join(e.lower, "a/b/c/file"), []byte("not copied"), 0o644))
	for _, rel := range []string{"a/b/c", "a/b", "a"} {
		setTimes(t, filepath.Join(e.lower, rel), oldTime)
	}
	setTimes(t, e.upper, oldTime)
	upperRoot := lstat(t, e.upper)

	inos := map[string]uint64{"a": 11, "a/b": 22, "a/b/c": 33}
	for _, rel := range []string{"a", "a/b", "a/b/c"} {
		must(t, e.c.Dir(copyup.Source{Layer: lowerLayer, Rel: rel, Ino: inos[rel]}))
	}
	for rel, m := range dirs {
		p := filepath.Join(e.upper, rel)
		st := lstat(t, p)
		if st.Mode != unix.S_IFDIR|m.mode || int(st.Uid) != m.uid || int(st.Gid) != m.gid {
			t.Errorf("%s: mode %o uid %d gid %d; want %o %d %d", rel, st.Mode, st.Uid, st.Gid, unix.S_IFDIR|m.mode, m.uid, m.gid)
		}
		if lo := lstat(t, filepath.Join(e.lower, rel)); st.Mtim != lo.Mtim {
			t.Errorf("%s: mtime %v, want the lower's %v", rel, st.Mtim, lo.Mtim)
		}
		x := xattrs(t, p)
		if x["user.dir"] != rel {
			t.Errorf("%s: user.dir = %q, want %q", rel, x["user.dir"], rel)
		}
		if v, ok := x["trusted.overlay.opaque"]; ok {
			t.Errorf("%s: the lower's opaque marker %q was copied", rel, v)
		}
		if x["trusted."+lookup.OriginXattr] != string(lookup.EncodeOrigin(inos[rel], 0)) {
			t.Errorf("%s: origin %x, want %x", rel, x["trusted."+lookup.OriginXattr], lookup.EncodeOrigin(inos[rel], 0))
		}
	}
	assertAbsent(t, filepath.Join(e.upper, "a/b/c/file"))
	if st := lstat(t, e.upper); st.Mtim != upperRoot.Mtim {
		t.Errorf("upper root mtime %v after Dir, was %v", st.Mtim, upperRoot.Mtim)
	}
	assertEmptyDir(t, e.work)

	// A directory already in the upper (copied up meanwhile) is left as it is.
	must(t, unix.Lsetxattr(filepath.Join(e.upper, "a/b"), "user.dir", []byte("upper"), 0))
	must(t, e.c.Dir(copyup.Source{Layer: lowerLayer, Rel: "a/b", Ino: 22}))
	if x := xattrs(t, filepath.Join(e.upper, "a/b")); x["user.dir"] != "upper" {
		t.Errorf("Dir of a directory already up replaced it: user.dir = %q", x["user.dir"])
	}
	assertEmptyDir(t, e.work)
}

func TestDirBelowAnExistingUpperDir(t *testing.T) {
	e := newEnv(t)
	must(t, os.MkdirAll(filepath.Join(e.lower, "a/b"), 0o755))
	must(t, os.Mkdir(filepath.Join(e.upper, "a"), 0o755))
	setTimes(t, filepath.Join(e.upper, "a"), oldTime)
	before := lstat(t, filepath.Join(e.upper, "a"))
	must(t, e.c.Dir(copyup.Source{Layer: lowerLayer, Rel: "a/b"}))
	if st := lstat(t, filepath.Join(e.upper, "a")); st.Mtim != before.Mtim {
		t.Errorf("existing parent mtime %v after Dir, was %v", st.Mtim, before.Mtim)
	}
	if st := lstat(t, filepath.Join(e.upper, "a/b")); st.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Errorf("a/b mode %o, want a directory", st.Mode)
	}
}

// A copy is built in the work dir and appears in the upper whole or not at all.
func TestCopyUpNeverHalfDone(t *testing.T) {
	t.Run("a source that vanished leaves no upper entry and no temp", func(t *testing.T) {
		e := newEnv(t)
		if err := e.c.File(copyup.Source{Layer: lowerLayer, Rel: "gone"}); err == nil {
			t.Fatal("File of a missing source succeeded")
		}
		assertAbsent(t, filepath.Join(e.upper, "gone"))
		assertEmptyDir(t, e.work)
	})
	t.Run("a failure after the data is written leaves no upper entry and no temp", func(t *testing.T) {
		e := newEnv(t)
		must(t, os.WriteFile(filepath.Join(e.lower, "f"), bytes.Repeat([]byte("d"), 3*mib), 0o644))
		// An xattr namespace no filesystem knows makes recording the origin fail, the
		// last step before the rename.
		e.stack.Format.XattrPrefix = "bogus."
		if err := e.c.File(copyup.Source{Layer: lowerLayer, Rel: "f", Ino: 5}); err == nil {
			t.Fatal("File succeeded although the origin could not be recorded")
		}
		assertAbsent(t, filepath.Join(e.upper, "f"))
		assertEmptyDir(t, e.work)
	})
	t.Run("a directory that fails half-way leaves no upper entry and no temp", func(t *testing.T) {
		e := newEnv(t)
		must(t, os.MkdirAll(filepath.Join(e.lower, "a/b"), 0o755))
		e.stack.Format.XattrPrefix = "bogus."
		if err := e.c.Dir(copyup.Source{Layer: lowerLayer, Rel: "a", Ino: 9}); err == nil {
			t.Fatal("Dir succeeded although the origin could not be recorded")
		}
		assertAbsent(t, filepath.Join(e.upper, "a"))
		assertEmptyDir(t, e.work)
	})
	t.Run("a name already in the upper is not replaced", func(t *testing.T) {
		e := newEnv(t)
		must(t, os.WriteFile(filepath.Join(e.lower, "f"), []byte("lower"), 0o644))
		must(t, os.WriteFile(filepath.Join(e.upper, "f"), []byte("upper"), 0o644))
		if err := e.c.File(copyup.Source{Layer: lowerLayer, Rel: "f"}); err == nil {
			t.Error("File over an existing upper entry succeeded")
		}
		if b, _ := os.ReadFile(filepath.Join(e.upper, "f")); string(b) != "upper" {
			t.Errorf("upper f now reads %q", b)
		}
		assertEmptyDir(t, e.work)
	})
	t.Run("while a large file is copied the upper name is absent or complete", func(t *testing.T) {
		e := newEnv(t)
		const size = 64 * mib
		src := filepath.Join(e.lower, "big")
		f, err := os.Create(src)
		must(t, err)
		chunk := bytes.Repeat([]byte("0123456789abcdef"), mib/16)
		for off := int64(0); off < size; off += mib {
			_, err := f.WriteAt(chunk, off)
			must(t, err)
		}
		must(t, f.Close())
		done := make(chan error, 1)
		go func() { done <- e.c.File(copyup.Source{Layer: lowerLayer, Rel: "big"}) }()
		dst := filepath.Join(e.upper, "big")
		sawTemp := false
		for finished := false; !finished; {
			select {
			case err := <-done:
				must(t, err)
				finished = true
			default:
			}
			var st unix.Stat_t
			if err := unix.Lstat(dst, &st); err == nil && st.Size != size {
				t.Fatalf("upper big visible with %d of %d bytes", st.Size, size)
			}
			if ents, _ := os.ReadDir(e.work); len(ents) > 0 {
				sawTemp = true
			}
		}
		if st := lstat(t, dst); st.Size != size {
			t.Errorf("upper big has %d bytes, want %d", st.Size, size)
		}
		t.Logf("temp seen in the work dir during the copy: %v", sawTemp)
		assertEmptyDir(t, e.work)
	})
}

// Copies of different objects run at once (callers serialise only the same object).
func TestFileConcurrentCopies(t *testing.T) {
	e := newEnv(t)
	const n = 32
	for i := 0; i < n; i++ {
		must(t, os.WriteFile(filepath.Join(e.lower, "f"+string(rune('a'+i%26))+string(rune('a'+i/26))), bytes.Repeat([]byte{byte(i)}, 4096*(i+1)), 0o644))
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- e.c.File(copyup.Source{Layer: lowerLayer, Rel: "f" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Ino: uint64(i + 1)})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	for i := 0; i < n; i++ {
		name := "f" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		b, err := os.ReadFile(filepath.Join(e.upper, name))
		must(t, err)
		if !bytes.Equal(b, bytes.Repeat([]byte{byte(i)}, 4096*(i+1))) {
			t.Errorf("%s: wrong data after concurrent copies", name)
		}
	}
	assertEmptyDir(t, e.work)
}
