package lookup

import (
	"encoding/binary"

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

// fileIno is the number a non-directory shows: its recorded origin when it was copied up,
// else its own. Multi reports a lower file with several links.
func (r *Resolver) fileIno(li, dirfd int, name string, st *unix.Stat_t) (uint64, bool, error) {
	if r.stack.Lower(li) {
		return r.mapIno(li, st.Ino), st.Nlink > 1, nil
	}
	if ino, ok := ReadOrigin(r.stack, dirfd, name); ok {
		return ino, false, nil
	}
	return r.mapIno(li, st.Ino), false, nil
}

// ReadOrigin reads the origin inode number recorded on an upper entry.
func ReadOrigin(s *layers.Stack, dirfd int, name string) (uint64, bool) {
	v, err := sysx.Getxattr(dirfd, name, s.Format.XattrPrefix+OriginXattr)
	if err != nil || len(v) != 8 {
		return 0, false
	}
	return binary.LittleEndian.Uint64(v), true
}

// EncodeOrigin is the value of the origin xattr for inode number ino.
func EncodeOrigin(ino uint64) []byte {
	return binary.LittleEndian.AppendUint64(nil, ino)
}
