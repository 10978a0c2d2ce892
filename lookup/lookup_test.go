package lookup_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cowfs/cowfs/lookup"
	"golang.org/x/sys/unix"
)

// want is the expected answer for one merged path: nil layers means "does not exist".
type want struct {
	layers []int
	mode   uint32
}

var absent = want{}

func fileIn(layers ...int) want { return want{layers: layers, mode: unix.S_IFREG} }
func dirIn(layers ...int) want  { return want{layers: layers, mode: unix.S_IFDIR} }
func linkIn(layer int) want     { return want{layers: []int{layer}, mode: unix.S_IFLNK} }

func (w want) String() string {
	if w.layers == nil {
		return "absent"
	}
	return fmt.Sprintf("mode %o in layers %v", w.mode, w.layers)
}

func checkPath(t *testing.T, r *lookup.Resolver, root lookup.Dir, path string, w want) {
	t.Helper()
	e, err := resolvePath(r, root, path)
	switch {
	case w.layers == nil:
		if err == nil {
			t.Errorf("%s: found %v in layers %v, want it absent", path, e.Mode, e.Layers)
		} else if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
			t.Errorf("%s: %v, want ENOENT", path, err)
		}
	case err != nil:
		t.Errorf("%s: %v, want %v", path, err, w)
	case !slices.Equal(e.Layers, w.layers) || e.Mode != w.mode:
		t.Errorf("%s: mode %o in layers %v, want %v", path, e.Mode, e.Layers, w)
	}
}

// Layer indices: 0 is the upper, 1.. the lowers top-down.
func TestLookupMergeRule(t *testing.T) {
	tests := []struct {
		name   string
		upper  spec
		lowers []spec
		want   map[string]want
	}{
		{
			name:   "a file in the upper hides the same name below",
			upper:  spec{"f": "file:up"},
			lowers: []spec{{"f": "file:low"}},
			want:   map[string]want{"f": fileIn(0)},
		},
		{
			name:   "a lower file shows through an upper without it",
			upper:  spec{},
			lowers: []spec{{"f": "file"}},
			want:   map[string]want{"f": fileIn(1), "g": absent},
		},
		{
			name:   "the topmost lower's file wins over the lowers below",
			upper:  spec{},
			lowers: []spec{{"f": "file"}, {"f": "file"}},
			want:   map[string]want{"f": fileIn(1)},
		},
		{
			name:   "a char 0/0 whiteout in the upper hides a lower file",
			upper:  spec{"f": "wh"},
			lowers: []spec{{"f": "file"}},
			want:   map[string]want{"f": absent},
		},
		{
			name:   "a .wh. file in the upper hides a lower file",
			upper:  spec{"f": "whfile"},
			lowers: []spec{{"f": "file"}},
			want:   map[string]want{"f": absent},
		},
		{
			name:   "an xattr whiteout in an opaque=x directory hides the lower file and only it",
			upper:  spec{"d": "opaque-x", "d/f": "xwh"},
			lowers: []spec{{"d/f": "file", "d/g": "file"}},
			want:   map[string]want{"d": dirIn(0, 1), "d/f": absent, "d/g": fileIn(1)},
		},
		{
			// DirFds keeps the first four layers it opens inline and the rest in a map.
			name:  "a directory in seven layers merges them all, and an xattr whiteout in the sixth hides only the seventh's file",
			upper: spec{"d": "dir", "d/u": "file"},
			lowers: []spec{{"d": "dir"}, {"d": "dir"}, {"d": "dir", "d/three": "file"}, {"d": "dir"},
				{"d": "opaque-x", "d/f": "xwh", "d/five": "file"}, {"d": "dir", "d/f": "file", "d/six": "file"}},
			want: map[string]want{"d": dirIn(0, 1, 2, 3, 4, 5, 6), "d/u": fileIn(0), "d/three": fileIn(3),
				"d/five": fileIn(5), "d/f": absent, "d/six": fileIn(6)},
		},
		{
			name:   "an xattr whiteout marker outside an opaque=x directory is an ordinary empty file",
			upper:  spec{"d": "dir", "d/f": "xwh"},
			lowers: []spec{{"d/f": "file"}},
			want:   map[string]want{"d/f": fileIn(0)},
		},
		{
			name:   "a whiteout in a middle lower hides the bottom lower",
			upper:  spec{},
			lowers: []spec{{"f": "wh", "g": "whfile"}, {"f": "file", "g": "dir", "g/x": "file"}},
			want:   map[string]want{"f": absent, "g": absent, "g/x": absent},
		},
		{
			name:   "a whiteout hides a whole lower directory",
			upper:  spec{"d": "wh"},
			lowers: []spec{{"d/x": "file"}},
			want:   map[string]want{"d": absent, "d/x": absent},
		},
		{
			name:   "a whiteout below the object found does not matter",
			upper:  spec{"f": "file"},
			lowers: []spec{{"f": "wh"}, {"f": "file"}},
			want:   map[string]want{"f": fileIn(0)},
		},
		{
			name:   "a non-directory below a directory is hidden",
			upper:  spec{"d": "dir"},
			lowers: []spec{{"d": "file"}, {"d": "dir", "d/x": "file"}},
			want:   map[string]want{"d": dirIn(0), "d/x": absent},
		},
		{
			name:   "a directory below a non-directory is hidden",
			upper:  spec{"d": "file"},
			lowers: []spec{{"d": "dir", "d/x": "file"}},
			want:   map[string]want{"d": fileIn(0)},
		},
		{
			name:   "directories merge across every layer",
			upper:  spec{"d/u": "file"},
			lowers: []spec{{"d/a": "file"}, {"d/b": "file", "d/u": "file"}},
			want:   map[string]want{"d": dirIn(0, 1, 2), "d/u": fileIn(0), "d/a": fileIn(1), "d/b": fileIn(2)},
		},
		{
			name:   "a merge skips layers without the directory",
			upper:  spec{"d": "dir"},
			lowers: []spec{{"other": "file"}, {"d/b": "file"}},
			want:   map[string]want{"d": dirIn(0, 2), "d/b": fileIn(2)},
		},
		{
			name:   "a trusted opaque upper directory stops the merge",
			upper:  spec{"d": "opaque"},
			lowers: []spec{{"d/x": "file"}},
			want:   map[string]want{"d": dirIn(0), "d/x": absent},
		},
		{
			name:   "a user opaque upper directory stops the merge",
			upper:  spec{"d": "opaque-user"},
			lowers: []spec{{"d/x": "file"}},
			want:   map[string]want{"d": dirIn(0), "d/x": absent},
		},
		{
			name:   "a fuse-overlayfs opaque upper directory stops the merge",
			upper:  spec{"d": "opaque-fuse"},
			lowers: []spec{{"d/x": "file"}},
			want:   map[string]want{"d": dirIn(0), "d/x": absent},
		},
		{
			name:   "an OCI opaque upper directory stops the merge",
			upper:  spec{"d": "opaque-file"},
			lowers: []spec{{"d/x": "file"}},
			want:   map[string]want{"d": dirIn(0), "d/x": absent, "d/.wh..wh..opq": absent},
		},
		{
			name:   "an opaque middle directory stops the merge below itself",
			upper:  spec{"d/u": "file"},
			lowers: []spec{{"d": "opaque", "d/a": "file"}, {"d/b": "file"}},
			want:   map[string]want{"d": dirIn(0, 1), "d/u": fileIn(0), "d/a": fileIn(1), "d/b": absent},
		},
		{
			name:   "marker names are never found",
			upper:  spec{"f": "whfile"},
			lowers: []spec{{".wh.g": "file", "d": "opaque-file"}},
			want:   map[string]want{".wh.f": absent, ".wh.g": absent, "d/.wh..wh..opq": absent, "d": dirIn(1)},
		},
		{
			name:   "a symlink to a directory is a symlink, never a directory",
			upper:  spec{},
			lowers: []spec{{"d": "symlink:@OUT"}, {"d": "dir", "d/x": "file"}},
			want:   map[string]want{"d": linkIn(1), "d/x": absent},
		},
		{
			name:   "a symlink below an upper directory is hidden and not searched",
			upper:  spec{"d": "dir"},
			lowers: []spec{{"d": "symlink:@OUT"}},
			want:   map[string]want{"d": dirIn(0), "d/x": absent, "d/sub": absent},
		},
		{
			name:   "a relative symlink below a directory is hidden and not searched",
			upper:  spec{"d": "dir"},
			lowers: []spec{{"d": "symlink:e", "e/x": "file"}},
			want:   map[string]want{"d": dirIn(0), "d/x": absent, "e/x": fileIn(1)},
		},
		{
			name:   "a symlink hides a directory of the layers below",
			upper:  spec{"d": "symlink:@OUT"},
			lowers: []spec{{"d/x": "file"}},
			want:   map[string]want{"d": linkIn(0), "d/x": absent},
		},
		{
			name:   "a dangling symlink is found",
			upper:  spec{},
			lowers: []spec{{"l": "symlink:nowhere"}},
			want:   map[string]want{"l": linkIn(1)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := openStack(t, tt.upper, tt.lowers...)
			r := lookup.New(f.stack, nil)
			for p, w := range tt.want {
				checkPath(t, r, f.root(), p, w)
			}
		})
	}
}

// A layer's copy of a directory that is a symlink must not be searched even when the
// caller lists that layer (the lower changed after the parent was looked up).
func TestLookupNeverFollowsSymlinksInLayerPaths(t *testing.T) {
	tests := []struct {
		name  string
		lower spec
		rel   string
	}{
		{"the directory itself is a symlink to a directory outside", spec{"d": "symlink:@OUT"}, "d"},
		{"the directory itself is a symlink inside the layer", spec{"d": "symlink:e", "e/x": "file"}, "d"},
		{"an ancestor is a symlink", spec{"a": "symlink:@OUT/..", "outside/x": "file"}, "a/outside"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := openStack(t, spec{tt.rel: "dir"}, tt.lower)
			r := lookup.New(f.stack, nil)
			e, err := r.Lookup(lookup.Dir{ID: 7, Rel: tt.rel, Layers: []int{0, 1}}, "x")
			if err == nil {
				t.Errorf("found x through a symlink: %+v", e)
			}
			e, err = r.LookupBelow(lookup.Dir{ID: 7, Rel: tt.rel, Layers: []int{0, 1}}, "x")
			if err == nil {
				t.Errorf("LookupBelow found x through a symlink: %+v", e)
			}
		})
	}
}

func TestLookupBelow(t *testing.T) {
	tests := []struct {
		name   string
		upper  spec // nil: a read-only stack
		lowers []spec
		dir    string // "" for the root; the name looked up is always f
		want   want
	}{
		{"an upper file over a lower file would expose the lower", spec{"f": "file"}, []spec{{"f": "file"}}, "", fileIn(1)},
		{"an upper-only file exposes nothing", spec{"f": "file"}, []spec{{}}, "", absent},
		{"the upper's whiteout is not consulted", spec{"f": "wh"}, []spec{{"f": "file"}}, "", fileIn(1)},
		{"a lower's whiteout still hides the layers below it", spec{"f": "file"}, []spec{{"f": "wh"}, {"f": "file"}}, "", absent},
		{"a lower directory below an upper file would be exposed", spec{"f": "file"}, []spec{{"f": "dir"}, {"f": "dir"}}, "", dirIn(1, 2)},
		{"in a read-only stack the topmost lower is consulted", nil, []spec{{"f": "file"}, {"f": "file"}}, "", fileIn(1)},
		{"in a directory only the lowers hold, every layer of it is consulted", spec{}, []spec{{"d/f": "file"}}, "d", fileIn(1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := openStack(t, tt.upper, tt.lowers...)
			r := lookup.New(f.stack, nil)
			dir := f.root()
			if tt.dir != "" {
				e, err := r.Lookup(dir, tt.dir)
				if err != nil {
					t.Fatal(err)
				}
				dir = lookup.Dir{ID: 2, Rel: tt.dir, Layers: e.Layers}
			}
			w := tt.want
			if tt.upper == nil && w.layers != nil {
				// Without an upper, layer indices start at the topmost lower.
				w.layers = slices.Clone(w.layers)
				for i := range w.layers {
					w.layers[i]--
				}
			}
			e, err := r.LookupBelow(dir, "f")
			switch {
			case w.layers == nil:
				if !errors.Is(err, lookup.ErrNotExist) {
					t.Errorf("LookupBelow = %+v, %v; want ErrNotExist", e, err)
				}
			case err != nil || !slices.Equal(e.Layers, w.layers) || e.Mode != w.mode:
				t.Errorf("LookupBelow = %+v, %v; want %v", e, err, w)
			}
		})
	}
}

// LookupListed trusts the listing for the lower layers above the one it found the name
// in (they cannot change), never for the upper (which can). Each case changes a layer
// after the "listing" found f in lower layer 2, and says where f is found then.
func TestLookupListedSkipsLowerLayersAboveTheListedOne(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, f *fixture)
		want   want
	}{
		{"nothing changed: the listed layer", func(*testing.T, *fixture) {}, fileIn(2)},
		{"a lower layer above is not looked at (lower layers never change)", func(t *testing.T, f *fixture) {
			must(t, os.WriteFile(filepath.Join(f.dirs[1], "f"), []byte("x"), 0o644))
		}, fileIn(2)},
		{"a file made in the upper since is found", func(t *testing.T, f *fixture) {
			must(t, os.WriteFile(filepath.Join(f.dirs[0], "f"), []byte("x"), 0o644))
		}, fileIn(0)},
		{"a whiteout made in the upper since hides it", func(t *testing.T, f *fixture) {
			must(t, unix.Mknod(filepath.Join(f.dirs[0], "f"), unix.S_IFCHR, 0))
		}, absent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := openStack(t, spec{}, spec{"g": "file"}, spec{"f": "file"})
			r := lookup.New(f.stack, nil)
			tc.change(t, f)
			fds := lookup.NewDirFds(f.stack, "")
			defer fds.Close()
			e, err := r.LookupListed(fds, f.root(), "f", 2)
			got := want{layers: e.Layers, mode: e.Mode}
			if err != nil {
				if !errors.Is(err, unix.ENOENT) {
					t.Fatal(err)
				}
				got = absent
			}
			if !slices.Equal(got.layers, tc.want.layers) || got.mode != tc.want.mode {
				t.Errorf("LookupListed(from 2) = %v, want %v", got, tc.want)
			}
		})
	}
}

// openFds counts this process's open fds.
func openFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// A DirFds opens each layer's copy of its directory once, however many layers and
// names it is asked about, and Close closes them all.
func TestDirFdsOpenEachLayerOnceAndCloseAll(t *testing.T) {
	for _, n := range []int{1, 4, 5, 9} {
		t.Run(fmt.Sprintf("%d layers", n), func(t *testing.T) {
			lowers := make([]spec, n)
			for i := range lowers {
				lowers[i] = spec{"d": "dir", fmt.Sprintf("d/f%d", i): "file"}
			}
			f := openStack(t, spec{"d": "dir"}, lowers...)
			r := lookup.New(f.stack, nil)
			d := lookup.Dir{ID: 2, Rel: "d"}
			for i := range f.stack.Layers {
				d.Layers = append(d.Layers, i)
			}
			before := openFds(t)
			fds := lookup.NewDirFds(f.stack, "d")
			for round := 0; round < 3; round++ {
				for i := range n {
					e, err := r.LookupIn(fds, d, fmt.Sprintf("f%d", i))
					if err != nil || !slices.Equal(e.Layers, []int{i + 1}) {
						t.Fatalf("f%d: %+v, %v; want it in layer %d", i, e, err, i+1)
					}
				}
				if _, err := r.LookupIn(fds, d, "absent"); !errors.Is(err, unix.ENOENT) {
					t.Fatalf("absent: %v", err)
				}
				if got := openFds(t) - before; got != n+1 {
					t.Fatalf("round %d: %d fds open, want one a layer (%d)", round, got, n+1)
				}
			}
			fds.Close()
			if got := openFds(t) - before; got != 0 {
				t.Errorf("%d fds left open after Close", got)
			}
		})
	}
}
