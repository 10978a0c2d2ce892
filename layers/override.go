package layers

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/cowfs/cowfs/internal/sysx"
	"golang.org/x/sys/unix"
)

// Stat override xattrs, fuse-overlayfs's xattr_permissions: where the daemon may not
// chown (or chmod freely), an object's owner and mode are kept in an xattr of the form
// "UID:GID:MODE" (mode in octal; fuse-overlayfs 1.15+ may add ":TYPE", which cowfs
// reads past and ignores). Which name a layer uses is marked on its root directory.
const (
	// OverridePrivileged is xattr_permissions=1's name.
	OverridePrivileged = "security.fuseoverlayfs.override_stat"
	// OverrideContainers is xattr_permissions=2's name (fuse-overlayfs 1.14+).
	OverrideContainers = "user.containers.override_stat"
	// OverrideUser is xattr_permissions=2's name before fuse-overlayfs 1.14, still
	// used for an upper whose root carries it.
	OverrideUser = "user.fuseoverlayfs.override_stat"
)

// overrideNames is the order fuse-overlayfs looks for a layer's override name.
var overrideNames = []string{OverridePrivileged, OverrideContainers, OverrideUser}

// Override is the owner and permission bits an override xattr holds.
type Override struct {
	UID, GID uint32
	Perm     uint32 // mode & 07777
}

// ParseOverride reads an override value.
func ParseOverride(v []byte) (Override, error) {
	parts := strings.SplitN(strings.TrimRight(string(v), "\x00"), ":", 4)
	if len(parts) < 3 {
		return Override{}, fmt.Errorf("override %q: want UID:GID:MODE", v)
	}
	uid, err1 := strconv.ParseUint(parts[0], 10, 32)
	gid, err2 := strconv.ParseUint(parts[1], 10, 32)
	mode, err3 := strconv.ParseUint(parts[2], 8, 32)
	if err := errors.Join(err1, err2, err3); err != nil {
		return Override{}, fmt.Errorf("override %q: %w", v, err)
	}
	return Override{UID: uint32(uid), GID: uint32(gid), Perm: uint32(mode) & 0o7777}, nil
}

// Value is the xattr value of o.
func (o Override) Value() []byte {
	return []byte(fmt.Sprintf("%d:%d:%o", o.UID, o.GID, o.Perm))
}

// Apply puts o into st (the file type is kept).
func (o Override) Apply(st *unix.Stat_t) {
	st.Uid, st.Gid = o.UID, o.GID
	st.Mode = st.Mode&unix.S_IFMT | o.Perm
}

// OverrideOf returns st's attributes as an override.
func OverrideOf(st *unix.Stat_t) Override {
	return Override{UID: st.Uid, GID: st.Gid, Perm: st.Mode & 0o7777}
}

// HasOverride reports whether objects of st's type carry overrides: directories and
// regular files (fuse-overlayfs reads no others).
func HasOverride(st *unix.Stat_t) bool {
	t := st.Mode & unix.S_IFMT
	return t == unix.S_IFDIR || t == unix.S_IFREG
}

// ApplyOverride overrides st (of name in dirfd, "" for dirfd itself) with its override
// in layer li, if the layer uses overrides and the object has one.
func (s *Stack) ApplyOverride(li int, dirfd int, name string, st *unix.Stat_t) {
	attr := s.Layers[li].Override
	if attr == "" || !HasOverride(st) {
		return
	}
	v, err := sysx.Getxattr(dirfd, name, attr)
	if err != nil {
		return
	}
	if o, err := ParseOverride(v); err == nil {
		o.Apply(st)
	}
}

// WritesOverride is the override name the upper layer writes owners and modes to
// (xattr_permissions), or "" when the daemon chowns and chmods for real.
func (s *Stack) WritesOverride() string {
	if !s.Writable || s.Opts.XattrPermissions == 0 {
		return ""
	}
	return s.Layers[Upper].Override
}

// BackingPerm is the real mode bits of an object whose mode is in an override: the
// daemon must always be able to read and search what it serves (fuse-overlayfs adds
// 0755 the same way).
func BackingPerm(perm uint32) uint32 { return perm | 0o755 }

// detectOverrides finds each layer's override name on its root, and, for a writable
// stack with xattr_permissions, decides the upper's and marks its root with it:
// copied from the topmost lower that has one, else 0:0:0555 (fuse-overlayfs's choice).
func (s *Stack) detectOverrides() error {
	for _, l := range s.Layers {
		for _, n := range overrideNames {
			if _, err := sysx.Getxattr(l.Root, "", n); err == nil {
				l.Override = n
				break
			}
		}
	}
	if !s.Writable || s.Opts.XattrPermissions == 0 {
		return nil
	}
	up := s.Layers[Upper]
	want := OverridePrivileged
	if s.Opts.XattrPermissions == 2 {
		want = OverrideContainers
		if up.Override == OverrideUser {
			want = OverrideUser
		}
	}
	if up.Override == want {
		return nil
	}
	var value []byte
	for _, l := range s.Layers[1:] {
		if l.Override == "" || (want == OverridePrivileged) != (l.Override == OverridePrivileged) {
			continue
		}
		if v, err := sysx.Getxattr(l.Root, "", l.Override); err == nil {
			value = v
			break
		}
	}
	if value == nil {
		value = Override{Perm: 0o555}.Value()
	}
	if err := sysx.Setxattr(up.Root, "", want, value, 0); err != nil {
		return fmt.Errorf("xattr_permissions=%d: mark the upper dir with %s: %w", s.Opts.XattrPermissions, want, err)
	}
	up.Override = want
	return nil
}
