// Package whiteout owns the deletion markers and opaque-directory markers of every format
// cowfs reads (kernel overlayfs's char 0/0 devices and xattrs, fuse-overlayfs's and OCI's
// `.wh.` files) and writes the kernel format (or `.wh.` files where mknod is refused).
package whiteout

import (
	"errors"
	"strings"

	"github.com/cowfs/cowfs/internal/sysx"
	"golang.org/x/sys/unix"
)

// On-disk names. The `.wh.` forms come from the OCI image layer format, which
// fuse-overlayfs also uses for whiteouts when it cannot mknod.
const (
	// Prefix marks a whiteout file: `.wh.NAME` hides NAME in the layers below.
	Prefix = ".wh."
	// OpaqueName is the OCI opaque marker: a directory holding it hides the layers below.
	OpaqueName = ".wh..wh..opq"
)

// Xattr names, without their namespace prefix ("trusted." when privileged, "user."
// otherwise, as kernel overlayfs's userxattr option does).
const (
	// OpaqueXattr is overlayfs's opaque-directory marker: "y" means opaque; "x" means
	// "not opaque, but holds xattr whiteouts" (overlayfs.rst, "whiteouts and opaque directories").
	OpaqueXattr = "overlay.opaque"
	// WhiteoutXattr marks a regular file as a whiteout (kernel 6.7+ xattr whiteouts),
	// honoured only in a directory whose OpaqueXattr is "x".
	WhiteoutXattr = "overlay.whiteout"
	// FuseOverlayOpaque is fuse-overlayfs's opaque marker (user namespace only).
	FuseOverlayOpaque = "user.fuseoverlayfs.opaque"
	// TrustedPrefix and UserPrefix are the two namespaces overlay markers live in.
	TrustedPrefix = "trusted."
	UserPrefix    = "user."
)

// internalXattrPrefixes are the namespaces of markers: overlay's in both namespaces,
// fuse-overlayfs's own (its stat overrides of xattr_permissions among them), and
// cowfs's (origin inode numbers).
var internalXattrPrefixes = []string{
	"trusted.overlay.", "user.overlay.", "user.fuseoverlayfs.", "security.fuseoverlayfs.",
	"user.containers.override_", "trusted.cowfs.", "user.cowfs.",
}

// escape is what a user's own attribute in a marker namespace is stored under, one level
// down, as kernel overlayfs does so overlays can nest (overlayfs.rst, "Nesting overlayfs
// mounts"): trusted.overlay.X is stored as trusted.overlay.overlay.X. A user can never
// set or see a real marker.
const escape = "overlay."

func internalPrefix(attr string) string {
	for _, p := range internalXattrPrefixes {
		if strings.HasPrefix(attr, p) {
			return p
		}
	}
	return ""
}

// StoredXattr is the name a user's attribute attr is stored under in a layer.
func StoredXattr(attr string) string {
	if p := internalPrefix(attr); p != "" {
		return p + escape + attr[len(p):]
	}
	return attr
}

// UserXattr is the name a stored attribute shows as, and false for a marker users must
// never see.
func UserXattr(stored string) (string, bool) {
	p := internalPrefix(stored)
	if p == "" {
		return stored, true
	}
	rest := stored[len(p):]
	if !strings.HasPrefix(rest, escape) {
		return "", false
	}
	return p + rest[len(escape):], true
}

// IsInternalName reports whether a directory entry name is a marker (`.wh.*`), never
// shown in the merged view and never creatable through it.
func IsInternalName(name string) bool {
	return strings.HasPrefix(name, Prefix)
}

// Target returns the name a `.wh.NAME` file hides, or false if name is not one (the
// opaque marker is not a whiteout of any name).
func Target(name string) (string, bool) {
	if !strings.HasPrefix(name, Prefix) || name == OpaqueName || len(name) == len(Prefix) {
		return "", false
	}
	return name[len(Prefix):], true
}

// IsCharWhiteout reports whether st is the kernel's whiteout: a character device 0/0.
func IsCharWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// DirMarks describes the markers on one layer's copy of a directory.
type DirMarks struct {
	// Opaque: the layers below do not contribute to this directory.
	Opaque bool
	// XattrWhiteouts: regular files here may be xattr whiteouts (overlay.opaque = "x").
	XattrWhiteouts bool
}

// ReadDirMarks reads the opaque markers of the directory `name` in dirfd ("" for dirfd
// itself), in every format.
func ReadDirMarks(dirfd int, name string) (DirMarks, error) {
	m, err := ReadDirXattrMarks(dirfd, name)
	if err != nil || m.Opaque {
		return m, err
	}
	var st unix.Stat_t
	at := name
	if at == "" {
		at = OpaqueName
	} else {
		at = name + "/" + OpaqueName
	}
	switch err := unix.Fstatat(dirfd, at, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil:
		m.Opaque = true
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
	default:
		return m, err
	}
	return m, nil
}

// ReadDirXattrMarks reads the markers of the directory `name` in dirfd ("" for dirfd
// itself) that are xattrs: all of them but a `.wh..wh..opq` file. Enough where only
// XattrWhiteouts matters, or where the caller reads the directory's names anyway; on a
// cold cache the lookup of that file inside the directory reads its blocks from disk
// before its listing would (a sixth of the daemon's samples in a cold `find`).
func ReadDirXattrMarks(dirfd int, name string) (DirMarks, error) {
	var m DirMarks
	attrs, err := sysx.Listxattr(dirfd, name)
	if err != nil && !sysx.IsNoData(err) {
		return m, err
	}
	for _, a := range attrs {
		switch a {
		case TrustedPrefix + OpaqueXattr, UserPrefix + OpaqueXattr, FuseOverlayOpaque:
			v, err := sysx.Getxattr(dirfd, name, a)
			if err != nil {
				if sysx.IsNoData(err) {
					continue
				}
				return m, err
			}
			switch string(v) {
			case "y":
				m.Opaque = true
			case "x":
				m.XattrWhiteouts = true
			}
		}
	}
	return m, nil
}

// IsXattrWhiteout reports whether the regular file `name` in dirfd carries the kernel's
// xattr whiteout marker. Only meaningful when the directory's XattrWhiteouts is set.
func IsXattrWhiteout(dirfd int, name string) bool {
	for _, p := range []string{TrustedPrefix, UserPrefix} {
		if _, err := sysx.Getxattr(dirfd, name, p+WhiteoutXattr); err == nil {
			return true
		}
	}
	return false
}

// HasWhiteoutFile reports whether dirfd holds a `.wh.NAME` file for name.
func HasWhiteoutFile(dirfd int, name string) (bool, error) {
	var st unix.Stat_t
	err := unix.Fstatat(dirfd, Prefix+name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENAMETOOLONG) {
		return false, nil
	}
	return false, err
}
