package lookup_test

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cowfs/cowfs/layers"
	"github.com/cowfs/cowfs/lookup"
	"golang.org/x/sys/unix"
)

// spec describes one layer as path -> what is there:
//
//	"file", "file:DATA"   a regular file
//	"dir"                 a directory
//	"opaque"              a directory with trusted.overlay.opaque=y
//	"opaque-user"         ... user.overlay.opaque=y
//	"opaque-fuse"         ... user.fuseoverlayfs.opaque=y
//	"opaque-file"         ... holding .wh..wh..opq
//	"opaque-x"            a directory with trusted.overlay.opaque=x (holds xattr whiteouts)
//	"wh"                  a char 0/0 whiteout
//	"whfile"              a .wh.NAME file next to NAME
//	"xwh"                 an empty file with trusted.overlay.whiteout (an xattr whiteout)
//	"symlink:TARGET"      a symlink; "@OUT" in TARGET is the test's outside directory
//	"link:PATH"           a hard link to PATH in the same layer
//	"origin:N"            a file with a cowfs origin xattr recording inode number N
//	"badorigin"           a file with an origin xattr of the wrong length
//	"meta", "meta:SIZE"   a metacopy file: sparse, of SIZE bytes, with an empty
//	                      trusted.overlay.metacopy (what kernel overlayfs writes)
//	"metav"               a metacopy file with the 4-byte versioned value
//	"metauser"            a metacopy file marked in the user.overlay namespace
//	"metabad"             a file with a malformed metacopy xattr
type spec map[string]string

// requireRoot skips tests that need trusted.* xattrs and char 0/0 devices.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: layers hold trusted.* xattrs and char 0/0 whiteouts")
	}
}

func writeSpec(t *testing.T, root, outside string, s spec) {
	t.Helper()
	paths := make([]string, 0, len(s))
	for p := range s {
		paths = append(paths, p)
	}
	sort.Slice(paths, func(i, j int) bool {
		li, lj := strings.HasPrefix(s[paths[i]], "link:"), strings.HasPrefix(s[paths[j]], "link:")
		if li != lj {
			return lj
		}
		return paths[i] < paths[j]
	})
	for _, p := range paths {
		what := s[p]
		full := filepath.Join(root, p)
		must(t, os.MkdirAll(filepath.Dir(full), 0o755))
		kind, arg, _ := strings.Cut(what, ":")
		switch kind {
		case "file":
			must(t, os.WriteFile(full, []byte(arg), 0o644))
		case "dir", "opaque", "opaque-user", "opaque-fuse", "opaque-file", "opaque-x":
			if err := os.Mkdir(full, 0o755); err != nil && !os.IsExist(err) {
				t.Fatal(err)
			}
			switch kind {
			case "opaque":
				must(t, unix.Lsetxattr(full, "trusted.overlay.opaque", []byte("y"), 0))
			case "opaque-user":
				must(t, unix.Lsetxattr(full, "user.overlay.opaque", []byte("y"), 0))
			case "opaque-fuse":
				must(t, unix.Lsetxattr(full, "user.fuseoverlayfs.opaque", []byte("y"), 0))
			case "opaque-file":
				must(t, os.WriteFile(filepath.Join(full, ".wh..wh..opq"), nil, 0o644))
			case "opaque-x":
				must(t, unix.Lsetxattr(full, "trusted.overlay.opaque", []byte("x"), 0))
			}
		case "wh":
			must(t, unix.Mknod(full, unix.S_IFCHR, 0))
		case "whfile":
			must(t, os.WriteFile(filepath.Join(filepath.Dir(full), ".wh."+filepath.Base(full)), nil, 0o644))
		case "xwh":
			must(t, os.WriteFile(full, nil, 0o644))
			must(t, unix.Lsetxattr(full, "trusted.overlay.whiteout", []byte("y"), 0))
		case "symlink":
			must(t, os.Symlink(strings.ReplaceAll(arg, "@OUT", outside), full))
		case "link":
			must(t, os.Link(filepath.Join(root, arg), full))
		case "origin":
			must(t, os.WriteFile(full, []byte("copied"), 0o644))
			var n uint64
			for _, c := range arg {
				n = n*10 + uint64(c-'0')
			}
			must(t, unix.Lsetxattr(full, "trusted."+lookup.OriginXattr, lookup.EncodeOrigin(n, 0), 0))
		case "badorigin":
			must(t, os.WriteFile(full, []byte("copied"), 0o644))
			must(t, unix.Lsetxattr(full, "trusted."+lookup.OriginXattr, []byte{1, 2, 3, 4}, 0))
		case "meta", "metav", "metauser", "metabad":
			must(t, os.WriteFile(full, nil, 0o644))
			var size int64
			for _, c := range arg {
				size = size*10 + int64(c-'0')
			}
			must(t, os.Truncate(full, size))
			attr, v := "trusted.overlay.metacopy", []byte{}
			switch kind {
			case "metav":
				v = []byte{0, 4, 0, 0}
			case "metauser":
				attr = "user.overlay.metacopy"
			case "metabad":
				v = []byte{0, 9}
			}
			must(t, unix.Lsetxattr(full, attr, v, 0))
		default:
			t.Fatalf("bad spec %q for %s", what, p)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// fixture is an opened stack over layer directories written from specs.
type fixture struct {
	stack   *layers.Stack
	dirs    []string // by layer index: the upper (if any) first, then the lowers top-down
	outside string   // a directory outside every layer, holding the file x
}

// openStack writes the lowers (topmost first) and the upper (nil: a read-only stack of
// lowers only) and opens them with layers.Open.
func openStack(t *testing.T, upper spec, lowers ...spec) *fixture {
	t.Helper()
	return openStackWith(t, layers.Options{}, upper, lowers...)
}

// openStackWith is openStack with mount options (the layer paths are filled in).
func openStackWith(t *testing.T, o layers.Options, upper spec, lowers ...spec) *fixture {
	t.Helper()
	requireRoot(t)
	base := t.TempDir()
	f := &fixture{outside: filepath.Join(base, "outside")}
	must(t, os.MkdirAll(filepath.Join(f.outside, "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(f.outside, "x"), []byte("outside"), 0o644))
	if upper != nil {
		o.Upper, o.Work = filepath.Join(base, "upper"), filepath.Join(base, "work")
		must(t, os.Mkdir(o.Upper, 0o755))
		must(t, os.Mkdir(o.Work, 0o755))
		writeSpec(t, o.Upper, f.outside, upper)
		f.dirs = append(f.dirs, o.Upper)
	}
	for i, l := range lowers {
		d := filepath.Join(base, "lower"+string(rune('0'+i)))
		must(t, os.Mkdir(d, 0o755))
		writeSpec(t, d, f.outside, l)
		o.Lowers = append(o.Lowers, d)
		f.dirs = append(f.dirs, d)
	}
	s, err := layers.Open(o)
	if err != nil {
		t.Fatalf("layers.Open: %v", err)
	}
	t.Cleanup(s.Close)
	f.stack = s
	return f
}

// root is the merged root directory: every layer contributes.
func (f *fixture) root() lookup.Dir {
	d := lookup.Dir{ID: 1}
	for i := range f.stack.Layers {
		d.Layers = append(d.Layers, i)
	}
	return d
}

// resolvePath looks up a slash-separated path from the root, component by component,
// the way the FUSE layer does.
func resolvePath(r *lookup.Resolver, root lookup.Dir, path string) (lookup.Entry, error) {
	dir := root
	var e lookup.Entry
	parts := strings.Split(path, "/")
	for i, name := range parts {
		var err error
		e, err = r.Lookup(dir, name)
		if err != nil {
			return e, err
		}
		if i < len(parts)-1 {
			if e.Mode != unix.S_IFDIR {
				return lookup.Entry{}, unix.ENOTDIR
			}
			dir = lookup.Dir{ID: dir.ID*1000 + uint64(i) + 1, Rel: strings.Join(parts[:i+1], "/"), Layers: e.Layers}
		}
	}
	return e, nil
}

// lstat stats path in layer li of f.
func (f *fixture) lstat(t *testing.T, li int, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(f.dirs[li], path), &st))
	return st
}

// openStackOpts opens existing directories as a stack (lowers topmost first).
func openStackOpts(t *testing.T, upper, work string, lowers ...string) *layers.Stack {
	t.Helper()
	s, err := layers.Open(layers.Options{Lowers: lowers, Upper: upper, Work: work})
	if err != nil {
		t.Fatalf("layers.Open: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}
