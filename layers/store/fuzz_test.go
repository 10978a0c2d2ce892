package store

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cowfs/cowfs/whiteout"
	"golang.org/x/sys/unix"
)

// fuzzSeeds are tars the fuzzers start from: the hostile cases and ordinary layers.
func fuzzSeeds(t testing.TB) [][]byte {
	return [][]byte{
		tarOf(t, dirE("etc"), reg("etc/hosts", "h"), sym("etc/l", "/etc/passwd"), hard("etc/h2", "etc/hosts")),
		tarOf(t, sym("up", ".."), reg("up/escape", "x")),
		tarOf(t, reg("../x", "x")),
		tarOf(t, hard("l", "../../etc/passwd")),
		tarOf(t, dirE("d"), opq("d"), wh("d", "gone"), reg("d/new", "n")),
		tarOf(t, wh("", "d"), dirE("d"), reg("f", "1"), sym("f", "g"), fifoE("p")),
		tarOf(t, dirE("ro").withMode(0o500), reg("ro/f", "x").withMode(0o4755)),
	}
}

// insideOnly fails t if anything changed next to dir (extractTo checks the parent) or
// if dir holds a symlink that its own extraction followed: every entry below dir is
// reached through real directories only.
func checkInside(t *testing.T, dir string) {
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		real, err := filepath.EvalSymlinks(filepath.Dir(p))
		if err != nil {
			return err
		}
		if real != filepath.Dir(p) {
			t.Errorf("%s lies under a symlink", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// FuzzExtract: any input either fails cleanly (an error, nothing written outside the
// target) or yields a tree entirely inside the target directory.
func FuzzExtract(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("needs root")
	}
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir, err := extractTo(t, data, rootOpts)
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("a multi-line message: %q", err)
		}
		checkInside(t, dir)
	})
}

// entriesOf lists a layer tar's entries in a normal form: name, type, mode, owner,
// size, link, content digest, xattrs; whiteouts by name only.
func entriesOf(t testing.TB, r io.Reader) []string {
	t.Helper()
	var out []string
	files := map[string][]string{} // regular files' fields, for the hard links to them
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name, _ := cleanName(hdr.Name)
		body, _ := io.ReadAll(tr)
		if strings.HasPrefix(filepath.Base(name), whiteout.Prefix) {
			out = append(out, name+" marker")
			continue
		}
		var xs []string
		for k, v := range hdr.PAXRecords {
			if strings.HasPrefix(k, paxXattr) {
				xs = append(xs, k+"="+v)
			}
		}
		slices.Sort(xs)
		fields := []string{string(hdr.Typeflag), octal(uint32(hdr.Mode & 0o7777)),
			itoa(hdr.Uid), itoa(hdr.Gid), string(body), hdr.Linkname, strings.Join(xs, ",")}
		switch hdr.Typeflag {
		case tar.TypeSymlink:
			fields = []string{string(hdr.Typeflag), hdr.Linkname}
		case tar.TypeReg:
			files[name] = fields
		case tar.TypeLink:
			// Which name of a linked file is the tar's first is a matter of order.
			target, _ := cleanName(hdr.Linkname)
			fields = files[target]
			files[name] = fields
		}
		out = append(out, name+"|"+strings.Join(fields, "|"))
	}
	slices.Sort(out)
	return out
}

func itoa(i int) string { return octal(uint32(i)) }

// FuzzRoundTrip: a layer tar of well-formed entries (as the generator makes from the
// fuzz input), extracted and written back, has the same entries; and writing the
// extracted tree is a fixed point (canonical).
func FuzzRoundTrip(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("needs root")
	}
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte("a layer with some entries in it"))
	f.Fuzz(func(t *testing.T, seed []byte) {
		entries := genEntries(seed)
		in := tarOf(t, entries...)
		dir, err := extractTo(t, in, rootOpts)
		if err != nil {
			t.Fatalf("a generated layer was refused: %v\n%v", err, entries)
		}
		var out bytes.Buffer
		if err := WriteTar(&out, dir); err != nil {
			t.Fatal(err)
		}
		if got, want := entriesOf(t, bytes.NewReader(out.Bytes())), entriesOf(t, bytes.NewReader(in)); !slices.Equal(got, want) {
			t.Fatalf("export(import(tar)):\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		dir2, err := extractTo(t, out.Bytes(), rootOpts)
		if err != nil {
			t.Fatal(err)
		}
		var again bytes.Buffer
		if err := WriteTar(&again, dir2); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again.Bytes(), out.Bytes()) {
			t.Errorf("the canonical tar is not a fixed point")
		}
	})
}

// genEntries makes a well-formed layer from seed: distinct names, directories before
// their children, hard links to earlier files, whiteouts of names not in the layer.
func genEntries(seed []byte) []tent {
	next := func() int {
		if len(seed) == 0 {
			return 0
		}
		b := seed[0]
		seed = seed[1:]
		return int(b)
	}
	names := []string{"a", "b", "c", "d", "e"}
	var dirs = []string{""}
	var files []string
	used := map[string]bool{}
	var out []tent
	for range 12 {
		if len(seed) == 0 {
			break
		}
		parent := dirs[next()%len(dirs)]
		p := joinRel(parent, names[next()%len(names)])
		if used[p] {
			continue
		}
		used[p] = true
		switch next() % 7 {
		case 0:
			out = append(out, dirE(p).withMode(int64(0o700|next()%0o100)))
			dirs = append(dirs, p)
		case 1:
			out = append(out, reg(p, strings.Repeat("x", next()%5)).withMode(int64(next()%0o1000)))
			files = append(files, p)
		case 2:
			out = append(out, sym(p, names[next()%len(names)]))
		case 3:
			if len(files) > 0 {
				out = append(out, hard(p, files[next()%len(files)]))
			}
		case 4:
			out = append(out, fifoE(p))
		case 5:
			e := reg(p, "x")
			e.xattr = map[string]string{"user.k": "v", "trusted.overlay.opaque": "y"}
			out = append(out, e)
			files = append(files, p)
		case 6:
			w := joinRel(parent, "w"+names[next()%len(names)])
			if !used[w] {
				used[w] = true
				out = append(out, wh(parent, filepath.Base(w)))
			}
		}
	}
	return out
}

func TestEntryErrorsUnwrap(t *testing.T) {
	err := error(&EntryError{Entry: "x", Err: unix.ELOOP})
	if !errors.Is(err, unix.ELOOP) {
		t.Errorf("EntryError does not unwrap")
	}
}
