package lookup_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cowfs/cowfs/lookup"
	"golang.org/x/sys/unix"
)

func TestLookupInodeNumbers(t *testing.T) {
	tests := []struct {
		name   string
		upper  spec
		lowers []spec
		path   string
		// inoOf is the layer and path whose real st_ino the merged view must show;
		// fixed, when set, is the number instead.
		inoLayer int
		inoPath  string
		fixed    uint64
		multi    bool
	}{
		{name: "a lower file shows its own number", upper: spec{}, lowers: []spec{{"f": "file"}}, path: "f", inoLayer: 1, inoPath: "f"},
		{name: "an upper file without origin shows its own number", upper: spec{"f": "file"}, lowers: []spec{{"f": "file"}}, path: "f", inoLayer: 0, inoPath: "f"},
		{name: "an upper file shows the origin recorded at copy-up", upper: spec{"f": "origin:123456789"}, lowers: []spec{{"f": "file"}}, path: "f", fixed: 123456789},
		{name: "an origin of the wrong length is ignored", upper: spec{"f": "badorigin"}, lowers: []spec{{}}, path: "f", inoLayer: 0, inoPath: "f"},
		{name: "an origin xattr on a lower file is ignored", upper: spec{}, lowers: []spec{{"f": "origin:42"}}, path: "f", inoLayer: 1, inoPath: "f"},
		{name: "a merged directory shows its topmost lower's number", upper: spec{"d": "dir"}, lowers: []spec{{"d": "dir"}, {"d": "dir"}}, path: "d", inoLayer: 1, inoPath: "d"},
		{name: "a merged directory skipping a layer shows the first lower holding it", upper: spec{"d": "dir"}, lowers: []spec{{}, {"d": "dir"}}, path: "d", inoLayer: 2, inoPath: "d"},
		{name: "an upper-only directory shows its own number", upper: spec{"d": "dir"}, lowers: []spec{{}}, path: "d", inoLayer: 0, inoPath: "d"},
		{name: "an opaque upper directory shows its own number", upper: spec{"d": "opaque"}, lowers: []spec{{"d": "dir"}}, path: "d", inoLayer: 0, inoPath: "d"},
		{name: "a directory of lowers only shows the topmost's number", upper: spec{}, lowers: []spec{{"d": "dir"}, {"d": "dir"}}, path: "d", inoLayer: 1, inoPath: "d"},
		{name: "a lower hard link is Multi", upper: spec{}, lowers: []spec{{"a": "file", "b": "link:a"}}, path: "b", inoLayer: 1, inoPath: "a", multi: true},
		{name: "an upper hard link is not Multi", upper: spec{"a": "file", "b": "link:a"}, lowers: []spec{{}}, path: "b", inoLayer: 0, inoPath: "a"},
		{name: "a lower symlink shows its own number", upper: spec{}, lowers: []spec{{"l": "symlink:x"}}, path: "l", inoLayer: 1, inoPath: "l"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := openStack(t, tt.upper, tt.lowers...)
			if !f.stack.SameDev {
				t.Fatal("layers in one TempDir are on several devices")
			}
			r := lookup.New(f.stack, nil)
			e, err := resolvePath(r, f.root(), tt.path)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.fixed
			if want == 0 {
				want = f.lstat(t, tt.inoLayer, tt.inoPath).Ino
			}
			if e.Ino != want {
				t.Errorf("Ino = %d, want %d", e.Ino, want)
			}
			if e.Multi != tt.multi {
				t.Errorf("Multi = %v, want %v", e.Multi, tt.multi)
			}
		})
	}
}

// Layers on separate filesystems reuse inode numbers; the merged view tells them apart by
// the device index in the top bits.
func TestLookupInodeNumbersAcrossFilesystems(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	var dirs []string
	for _, n := range []string{"lower0", "lower1", "upperfs"} {
		d := filepath.Join(base, n)
		must(t, os.Mkdir(d, 0o755))
		if err := unix.Mount("tmpfs", d, "tmpfs", 0, "mode=0755"); err != nil {
			t.Skipf("cannot mount tmpfs layers: %v", err)
		}
		t.Cleanup(func() { unix.Unmount(d, unix.MNT_DETACH) })
		dirs = append(dirs, d)
	}
	upper, work := filepath.Join(dirs[2], "upper"), filepath.Join(dirs[2], "work")
	must(t, os.Mkdir(upper, 0o755))
	must(t, os.Mkdir(work, 0o755))
	// The same sequence of creations on fresh tmpfs instances tends to give the same numbers.
	for _, d := range []string{dirs[0], dirs[1], upper} {
		must(t, os.WriteFile(filepath.Join(d, "f"), nil, 0o644))
		must(t, os.WriteFile(filepath.Join(d, "g"), nil, 0o644))
	}
	must(t, os.Remove(filepath.Join(dirs[0], "f")))
	must(t, os.Remove(filepath.Join(upper, "f")))
	must(t, os.Remove(filepath.Join(upper, "g")))
	s := openStackOpts(t, upper, work, dirs[0], dirs[1])
	if s.SameDev {
		t.Fatal("SameDev with layers on three tmpfs instances")
	}
	r := lookup.New(s, nil)
	root := lookup.Dir{ID: 1, Layers: []int{0, 1, 2}}
	seen := map[uint64]string{}
	for _, c := range []struct {
		name  string
		layer int
		real  string
	}{{"f", 2, filepath.Join(dirs[1], "f")}, {"g", 1, filepath.Join(dirs[0], "g")}} {
		e, err := r.Lookup(root, c.name)
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		must(t, unix.Lstat(c.real, &st))
		if want := lookup.MapIno(s, c.layer, st.Ino); e.Ino != want {
			t.Errorf("%s: Ino = %#x, want %#x (layer %d's %#x mapped)", c.name, e.Ino, want, c.layer, st.Ino)
		}
		if e.Ino>>56 != uint64(s.Layers[c.layer].DevIndex) {
			t.Errorf("%s: Ino %#x does not carry device index %d in its top bits", c.name, e.Ino, s.Layers[c.layer].DevIndex)
		}
		if other, dup := seen[e.Ino]; dup {
			t.Errorf("%s and %s share inode number %#x", c.name, other, e.Ino)
		}
		seen[e.Ino] = c.name
	}
}
