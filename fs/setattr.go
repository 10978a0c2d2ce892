package fs

import (
	"context"
	"syscall"
	"time"

	"github.com/cowfs/cowfs/internal/sysx"
	"github.com/cowfs/cowfs/layers"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

var _ = (gofs.NodeSetattrer)((*node)(nil))

// Setattr changes mode, owner, size or times: on the upper copy, made first if needed.
func (n *node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if !n.ofs.stack.Writable {
		return syscall.EROFS
	}
	size, hasSize := in.GetSize()
	h, _ := f.(*handle)
	if hasSize && h != nil {
		// ftruncate() on an fd open for writing: already on the upper.
		if done, errno := h.ftruncate(size); errno != 0 {
			return errno
		} else if done {
			hasSize = false
		}
	}
	// A truncation to zero needs no data copied up; a change of attributes only, no data
	// on a metacopy=on mount.
	if hasSize {
		if errno := n.copyUp(size == 0); errno != 0 {
			return errno
		}
	} else if errno := n.copyUpMeta(); errno != 0 {
		return errno
	}
	rel, errno := n.rel()
	if errno != 0 {
		if h != nil {
			return n.setattrFd(h, in, out)
		}
		return errno
	}
	dirfd, name, release, err := n.parentDir(layers.Upper, rel)
	if err != nil {
		return toErrno(err)
	}
	defer release()
	// A chmod rewrites an ACL's mask and a chown drops security.capability; times alone
	// (tar sets them on every file) change no attribute.
	if in.Valid&^timesOnly != 0 {
		defer n.dropXattrs()
	}
	t := atTarget{dirfd: dirfd, name: name, flags: unix.AT_SYMLINK_NOFOLLOW}
	if name == "" {
		t.name, t.flags = ".", 0
	}
	if errno := n.ofs.applySetattr(t, in, hasSize); errno != 0 {
		return errno
	}
	// The attributes now, through the parent already open: the object is in the upper.
	st, err := n.ofs.statAt(layers.Upper, dirfd, name)
	if err != nil {
		return toErrno(err)
	}
	ls := n.getLayers()
	n.ofs.fixAttr(&st, ls)
	if prev, ok := n.lastAttr(); ok && len(ls) > 1 && st.Mode&unix.S_IFMT == unix.S_IFREG {
		// A metacopy file's blocks are its data's, in a lower layer, which no setattr
		// changes (a truncation copies the data up first).
		st.Blocks = prev.Blocks
	} else {
		n.ofs.metacopyBlocks(&st, ls, rel)
	}
	n.remember(&st)
	n.ofs.fillAttr(out, &st)
	// The reply holds the attributes as they are now, so the kernel may keep them like
	// a GETATTR's (go-fuse leaves a SETATTR reply's timeout at 0: every chmod, chown
	// or utimes was followed by a GETATTR). go-fuse puts the node's number into a
	// GETATTR reply, not into this one: a copied-up object's real number is not its own.
	out.Ino = n.StableAttr().Ino
	if n.repointed() {
		out.SetTimeout(time.Nanosecond) // as in Getattr
	} else {
		out.SetTimeout(kernelTimeout)
	}
	return 0
}

// timesOnly are the SETATTR fields of a change of times (with the handle and lock
// owner it may carry), which leaves the object's extended attributes as they were.
const timesOnly = fuse.FATTR_ATIME | fuse.FATTR_MTIME | fuse.FATTR_ATIME_NOW | fuse.FATTR_MTIME_NOW |
	fuse.FATTR_CTIME | fuse.FATTR_FH | fuse.FATTR_LOCKOWNER

// setattrFd applies a setattr through the open file of a name that was removed.
func (n *node) setattrFd(h *handle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	h.mu.Lock()
	fd, layer := h.fd, h.layer
	h.mu.Unlock()
	if layer != layers.Upper {
		// A read-only fd of a metacopy file is open on its data in a lower layer, which
		// must never change; the removed name's upper copy is gone.
		return syscall.ESTALE
	}
	_, hasSize := in.GetSize()
	if errno := n.ofs.applySetattr(fdTarget(fd), in, hasSize); errno != 0 {
		return errno
	}
	return h.Getattr(context.Background(), out)
}

// setattrTarget is what a setattr changes: a name in a directory, or an open file.
type setattrTarget interface {
	chmod(mode uint32) error
	chown(uid, gid int) error
	truncate(size int64) error
	utimes(ts []unix.Timespec) error
	// stat, getxattr and setxattr serve xattr_permissions's overrides.
	stat() (unix.Stat_t, error)
	getxattr(attr string) ([]byte, error)
	setxattr(attr string, v []byte) error
}

// applySetattr applies the changes of in: mode, owner, size (only when withSize: an
// ftruncate through a writable handle was done already), times.
func (o *overlayFS) applySetattr(t setattrTarget, in *fuse.SetAttrIn, withSize bool) syscall.Errno {
	if done, errno := o.setOverride(t, in, withSize); done || errno != 0 {
		return errno
	}
	if mode, ok := in.GetMode(); ok {
		if err := t.chmod(mode & 0o7777); err != nil {
			return toErrno(err)
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		u, g := -1, -1
		if uok {
			u = int(uid)
		}
		if gok {
			g = int(gid)
		}
		u, g = o.diskOwner(u, g)
		if err := t.chown(u, g); err != nil {
			return toErrno(err)
		}
	}
	return o.setSizeTimes(t, in, withSize)
}

// setOverride writes a chmod or chown of a directory or regular file to its override
// xattr under xattr_permissions (the real owner and mode stay the daemon's), then does
// the rest of in. done is false when the mount keeps no overrides or nothing was asked.
func (o *overlayFS) setOverride(t setattrTarget, in *fuse.SetAttrIn, withSize bool) (done bool, _ syscall.Errno) {
	attr := o.stack.WritesOverride()
	mode, mok := in.GetMode()
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if attr == "" || !(mok || uok || gok) {
		return false, 0
	}
	st, err := t.stat()
	if err != nil {
		return true, toErrno(err)
	}
	if !layers.HasOverride(&st) {
		return false, 0
	}
	cur := layers.OverrideOf(&st)
	if v, err := t.getxattr(attr); err == nil {
		if p, err := layers.ParseOverride(v); err == nil {
			cur = p
		}
	}
	if mok {
		cur.Perm = mode & 0o7777
	}
	u, g := -1, -1
	if uok {
		u = int(uid)
	}
	if gok {
		g = int(gid)
	}
	u, g = o.diskOwner(u, g)
	if u >= 0 {
		cur.UID = uint32(u)
	}
	if g >= 0 {
		cur.GID = uint32(g)
	}
	if err := t.setxattr(attr, cur.Value()); err != nil {
		return true, toErrno(err)
	}
	return true, o.setSizeTimes(t, in, withSize)
}

// setSizeTimes applies the size (when withSize) and times of in.
func (o *overlayFS) setSizeTimes(t setattrTarget, in *fuse.SetAttrIn, withSize bool) syscall.Errno {
	if size, ok := in.GetSize(); ok && withSize {
		if err := t.truncate(int64(size)); err != nil {
			return toErrno(err)
		}
	}
	if ts, ok := setattrTimes(in); ok {
		if err := t.utimes(ts); err != nil {
			return toErrno(err)
		}
	}
	return 0
}

// atTarget is the entry name in dirfd (flags: AT_SYMLINK_NOFOLLOW unless it is ".").
type atTarget struct {
	dirfd int
	name  string
	flags int
}

func (t atTarget) chmod(mode uint32) error  { return sysx.ChmodNoFollow(t.dirfd, t.name, mode) }
func (t atTarget) chown(uid, gid int) error { return unix.Fchownat(t.dirfd, t.name, uid, gid, t.flags) }
func (t atTarget) utimes(ts []unix.Timespec) error {
	return unix.UtimesNanoAt(t.dirfd, t.name, ts, t.flags)
}
func (t atTarget) truncate(size int64) error {
	fd, err := unix.Openat(t.dirfd, t.name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Ftruncate(fd, size)
}

func (t atTarget) stat() (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstatat(t.dirfd, t.name, &st, t.flags)
	return st, err
}
func (t atTarget) getxattr(attr string) ([]byte, error) { return sysx.Getxattr(t.dirfd, t.name, attr) }
func (t atTarget) setxattr(attr string, v []byte) error {
	return sysx.Setxattr(t.dirfd, t.name, attr, v, 0)
}

// fdTarget is an open file.
type fdTarget int

func (t fdTarget) chmod(mode uint32) error   { return unix.Fchmod(int(t), mode) }
func (t fdTarget) chown(uid, gid int) error  { return unix.Fchown(int(t), uid, gid) }
func (t fdTarget) truncate(size int64) error { return unix.Ftruncate(int(t), size) }
func (t fdTarget) utimes(ts []unix.Timespec) error {
	return unix.UtimesNanoAt(unix.AT_FDCWD, sysx.ProcPath(int(t), ""), ts, 0)
}

func (t fdTarget) stat() (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstat(int(t), &st)
	return st, err
}
func (t fdTarget) getxattr(attr string) ([]byte, error) { return sysx.Getxattr(int(t), "", attr) }
func (t fdTarget) setxattr(attr string, v []byte) error {
	return sysx.Setxattr(int(t), "", attr, v, 0)
}

// setattrTimes turns the request's times into utimensat's, with UTIME_NOW and UTIME_OMIT.
func setattrTimes(in *fuse.SetAttrIn) ([]unix.Timespec, bool) {
	omit := unix.Timespec{Nsec: unix.UTIME_OMIT}
	now := unix.Timespec{Nsec: unix.UTIME_NOW}
	ts := []unix.Timespec{omit, omit}
	set := false
	if in.Valid&fuse.FATTR_ATIME != 0 {
		set = true
		if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
			ts[0] = now
		} else {
			ts[0] = unix.Timespec{Sec: int64(in.Atime), Nsec: int64(in.Atimensec)}
		}
	}
	if in.Valid&fuse.FATTR_MTIME != 0 {
		set = true
		if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
			ts[1] = now
		} else {
			ts[1] = unix.Timespec{Sec: int64(in.Mtime), Nsec: int64(in.Mtimensec)}
		}
	}
	return ts, set
}
