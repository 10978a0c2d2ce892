package lookup_test

import (
	"errors"
	"testing"

	"github.com/cowfs/cowfs/layers"
	"github.com/cowfs/cowfs/lookup"
	"golang.org/x/sys/unix"
)

// eio is the expected answer for a metacopy file whose data cannot be found or whose
// marker is malformed: the kernel fails the lookup with EIO.
var eio = want{mode: 1}

// Layer indices: 0 is the upper, 1.. the lowers top-down.
func TestLookupMetacopy(t *testing.T) {
	tests := []struct {
		name     string
		metacopy bool // the mount's metacopy option
		upper    spec
		lowers   []spec
		want     map[string]want
	}{
		{
			name:   "an upper metacopy file takes its data from the lower file of the same name",
			upper:  spec{"f": "meta:4", "d/g": "meta:1"},
			lowers: []spec{{"f": "file:data", "d/g": "file:g"}},
			want:   map[string]want{"f": fileIn(0, 1), "d/g": fileIn(0, 1)},
		},
		{
			name:   "the versioned 4-byte value is a metacopy too",
			upper:  spec{"f": "metav:4"},
			lowers: []spec{{"f": "file:data"}},
			want:   map[string]want{"f": fileIn(0, 1)},
		},
		{
			name:   "an upper metacopy file is followed on a metacopy=off mount too",
			upper:  spec{"f": "meta:4"},
			lowers: []spec{{"f": "file:data"}},
			want:   map[string]want{"f": fileIn(0, 1)},
		},
		{
			name:   "the data is the first regular file below, skipping layers without the name",
			upper:  spec{"f": "meta:4"},
			lowers: []spec{{"other": "file"}, {"f": "file:data"}, {"f": "file:older"}},
			want:   map[string]want{"f": fileIn(0, 2)},
		},
		{
			name:     "a lower metacopy file is skipped on the way down on a metacopy=on mount",
			metacopy: true,
			upper:    spec{"f": "meta:4"},
			lowers:   []spec{{"f": "meta:4"}, {"f": "file:data"}},
			want:     map[string]want{"f": fileIn(0, 2)},
		},
		{
			name:     "a lower metacopy file shows with the data of the layer below on a metacopy=on mount",
			metacopy: true,
			upper:    spec{},
			lowers:   []spec{{"f": "meta:4"}, {"f": "file:data"}},
			want:     map[string]want{"f": fileIn(1, 2)},
		},
		{
			name:   "a lower metacopy file is an ordinary file on a metacopy=off mount, as the kernel does not follow it",
			upper:  spec{},
			lowers: []spec{{"f": "meta:4"}, {"f": "file:data"}},
			want:   map[string]want{"f": fileIn(1)},
		},
		{
			name:   "a metacopy file with nothing below is EIO",
			upper:  spec{"f": "meta:4"},
			lowers: []spec{{}},
			want:   map[string]want{"f": eio},
		},
		{
			name:   "a whiteout below a metacopy file is EIO",
			upper:  spec{"f": "meta:4"},
			lowers: []spec{{"f": "wh"}, {"f": "file:data"}},
			want:   map[string]want{"f": eio},
		},
		{
			name:   "a directory below a metacopy file is EIO",
			upper:  spec{"f": "meta:4"},
			lowers: []spec{{"f": "dir"}},
			want:   map[string]want{"f": eio},
		},
		{
			name:   "a symlink below a metacopy file is EIO",
			upper:  spec{"f": "meta:4"},
			lowers: []spec{{"f": "symlink:x"}},
			want:   map[string]want{"f": eio},
		},
		{
			name:   "a malformed metacopy xattr is EIO",
			upper:  spec{"f": "metabad"},
			lowers: []spec{{"f": "file:data"}},
			want:   map[string]want{"f": eio},
		},
		{
			name:   "a metacopy file in an opaque directory has no data below: EIO",
			upper:  spec{"d": "opaque", "d/f": "meta:4"},
			lowers: []spec{{"d/f": "file:data"}},
			want:   map[string]want{"d": dirIn(0), "d/f": eio},
		},
		{
			name:   "a user.overlay marker is not honoured on a privileged mount, which writes trusted.overlay",
			upper:  spec{"f": "metauser:4"},
			lowers: []spec{{"f": "file:data"}},
			want:   map[string]want{"f": fileIn(0)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := openStackWith(t, layers.Options{Metacopy: tt.metacopy}, tt.upper, tt.lowers...)
			r := lookup.New(f.stack, nil)
			for p, w := range tt.want {
				if w.mode != eio.mode {
					checkPath(t, r, f.root(), p, w)
					continue
				}
				e, err := resolvePath(r, f.root(), p)
				if !errors.Is(err, unix.EIO) {
					t.Errorf("%s: %+v, %v; want EIO", p, e, err)
				}
			}
			for p, w := range tt.want {
				if e, err := resolvePath(r, f.root(), p); err == nil && e.Metacopy() != (len(w.layers) > 1 && w.mode == unix.S_IFREG) {
					t.Errorf("%s: Metacopy() = %v for layers %v", p, e.Metacopy(), e.Layers)
				}
			}
		})
	}
}

// A metacopy file shows the number its upper copy records as its origin, like any
// copied-up file, so st_ino stays what it was before the metadata copy-up.
func TestLookupMetacopyKeepsOrigin(t *testing.T) {
	f := openStack(t, spec{"f": "meta:4"}, spec{"f": "file:data"})
	full := f.dirs[0] + "/f"
	must(t, unix.Lsetxattr(full, "trusted."+lookup.OriginXattr, lookup.EncodeOrigin(4242, 0), 0))
	r := lookup.New(f.stack, nil)
	e, err := r.Lookup(f.root(), "f")
	if err != nil {
		t.Fatal(err)
	}
	if e.Ino != 4242 || !e.Metacopy() {
		t.Errorf("Lookup = %+v, want ino 4242 and metacopy", e)
	}
}
