package lookup

import (
	"encoding/binary"
	"hash/fnv"

	"github.com/cowfs/cowfs/internal/sysx"
	"github.com/cowfs/cowfs/layers"
	"golang.org/x/sys/unix"
)

// OriginXattr (after the namespace prefix) records, on an upper object made by copy-up,
// the inode number the object showed before, so st_ino survives copy-up and remount.
// Kernel overlayfs ignores it; it stores its own origin as a file handle.
const OriginXattr = "cowfs.origin"

// devBits is where the layer's device index goes in a mapped inode number when the
// layers span several filesystems (like overlayfs's xino).
const devBits = 56

// mapIno turns a real inode number of layer li into the merged view's number.
func (r *Resolver) mapIno(li int, ino uint64) uint64 {
	return MapIno(r.stack, li, ino)
}

// MapIno turns a real inode number of layer li into the merged view's number: the same
// number when all layers share a filesystem, else with the device index in the top bits.
func MapIno(s *layers.Stack, li int, ino uint64) uint64 {
	if s.SameDev {
		return ino
	}
	return ino ^ uint64(s.Layers[li].DevIndex)<<devBits
}

// fileIno is the number a non-directory shows — its recorded origin when it was copied
// up, else its own — and the generation that tells it apart from other objects showing
// the same number (see Entry.Gen).
func (r *Resolver) fileIno(li, dirfd int, rel, name string, st *unix.Stat_t) (ino, gen uint64) {
	if r.stack.Lower(li) {
		if st.Nlink > 1 {
			h := fnv.New64a()
			h.Write([]byte(rel))
			h.Write([]byte{'/'})
			h.Write([]byte(name))
			gen = h.Sum64() | 1
		}
		return r.mapIno(li, st.Ino), gen
	}
	if origin, ogen, ok := ReadOrigin(r.stack, dirfd, name); ok {
		// The copy keeps the number and generation it showed while lower, so the node
		// stays one node; upper hard links of one copy share the xattr.
		return origin, ogen
	}
	return r.mapIno(li, st.Ino), 0
}

// ReadOrigin reads the origin inode number (and the generation that set the object
// apart from others showing the same number, see Entry.Gen) recorded on an upper entry.
func ReadOrigin(s *layers.Stack, dirfd int, name string) (ino, gen uint64, ok bool) {
	if s.Format.XattrPrefix == "" {
		return 0, 0, false // the upper takes no xattrs: nothing was recorded
	}
	v, err := sysx.Getxattr(dirfd, name, s.Format.XattrPrefix+OriginXattr)
	if err != nil {
		return 0, 0, false
	}
	switch len(v) {
	case 8:
		return binary.LittleEndian.Uint64(v), 0, true
	case 16:
		return binary.LittleEndian.Uint64(v), binary.LittleEndian.Uint64(v[8:]), true
	}
	return 0, 0, false
}

// EncodeOrigin is the value of the origin xattr: the inode number, little-endian, then
// the generation when it is not 0.
func EncodeOrigin(ino, gen uint64) []byte {
	b := binary.LittleEndian.AppendUint64(nil, ino)
	if gen != 0 {
		b = binary.LittleEndian.AppendUint64(b, gen)
	}
	return b
}
