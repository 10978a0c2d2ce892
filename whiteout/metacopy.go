package whiteout

import (
	"fmt"

	"github.com/cowfs/cowfs/internal/sysx"
	"golang.org/x/sys/unix"
)

// MetacopyXattr (after the namespace prefix) marks a regular file whose metadata was
// copied up without its data: the data is the next regular file at the same path in
// the layers below (kernel overlayfs's metadata-only copy-up, overlayfs.rst "Metadata
// only copy up"). It is a marker: never shown, never copied.
const MetacopyXattr = "overlay.metacopy"

// Sizes of the kernel's struct ovl_metacopy { u8 version; u8 len; u8 flags;
// u8 digest_algo; u8 digest[64]; } (fs/overlayfs/overlayfs.h).
const (
	metacopyMinSize = 4
	metacopyMaxSize = 4 + 64
)

// ParseMetacopy checks a metacopy xattr value as the kernel does
// (ovl_check_metacopy_xattr): empty — what the kernel writes without fs-verity, and
// what cowfs writes — or a version 0 struct whose len field is the value's length. A
// digest is accepted and not verified (cowfs has no verity option).
func ParseMetacopy(v []byte) error {
	if len(v) == 0 {
		return nil
	}
	if len(v) < metacopyMinSize || len(v) > metacopyMaxSize {
		return fmt.Errorf("metacopy xattr of %d bytes: %w", len(v), unix.EIO)
	}
	if v[0] != 0 {
		return fmt.Errorf("metacopy xattr version %d: %w", v[0], unix.EIO)
	}
	if int(v[1]) != len(v) {
		return fmt.Errorf("metacopy xattr says %d bytes, has %d: %w", v[1], len(v), unix.EIO)
	}
	return nil
}

// IsMetacopy reports whether the regular file name in dirfd carries the metacopy
// marker in the namespace prefix ("trusted." or "user."); a malformed one is an EIO error.
func IsMetacopy(dirfd int, name, prefix string) (bool, error) {
	v, err := sysx.Getxattr(dirfd, name, prefix+MetacopyXattr)
	if err != nil {
		if sysx.IsNoData(err) {
			return false, nil
		}
		return false, err
	}
	if err := ParseMetacopy(v); err != nil {
		return false, fmt.Errorf("%q: %w", name, err)
	}
	return true, nil
}
