package fs

import (
	"context"
	"errors"
	"syscall"

	"github.com/cowfs/cowfs/internal/sysx"
	"github.com/cowfs/cowfs/layers"
	"github.com/cowfs/cowfs/lookup"
	"github.com/cowfs/cowfs/whiteout"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// owner is who a new object belongs to: the caller, with the group of a set-group-ID
// parent directory (as on any Linux filesystem).
type owner struct {
	uid, gid int
	// setgid: the parent directory is set-group-ID (new directories inherit the bit).
	setgid bool
}

// addMode adds mode bits to name in dirfd.
func addMode(dirfd int, name string, bits uint32) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	return sysx.ChmodNoFollow(dirfd, name, (st.Mode&0o7777)|bits)
}

// callerOwner is the owner the caller of a request gives new objects on disk.
func (o *overlayFS) callerOwner(ctx context.Context) (uid, gid int, ok bool) {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return -1, -1, false
	}
	uid, gid = o.diskOwner(int(c.Uid), int(c.Gid))
	return uid, gid, true
}

func (n *node) ownerFor(ctx context.Context, upperDir int) owner {
	o := owner{uid: -1, gid: -1}
	if uid, gid, ok := n.ofs.callerOwner(ctx); ok {
		o.uid, o.gid = uid, gid
	}
	var st unix.Stat_t
	if unix.Fstat(upperDir, &st) == nil && st.Mode&unix.S_ISGID != 0 {
		o.gid, o.setgid = int(st.Gid), true
	}
	return o
}

// setOwnerOverride records the owner and mode of a new object in its override xattr
// (xattr_permissions) instead of chowning it, and lets the daemon read and search it.
// Objects other than directories and regular files keep the daemon as owner (their
// overrides are not read; a symlink cannot even hold a user.* xattr).
func setOwnerOverride(dirfd int, name, attr string, who owner) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if !layers.HasOverride(&st) {
		return nil
	}
	o := layers.OverrideOf(&st)
	if who.uid >= 0 {
		o.UID = uint32(who.uid)
	}
	if who.gid >= 0 {
		o.GID = uint32(who.gid)
	}
	if err := sysx.Setxattr(dirfd, name, attr, o.Value(), 0); err != nil {
		return err
	}
	return sysx.ChmodNoFollow(dirfd, name, layers.BackingPerm(o.Perm))
}

// maker creates one object named name in dirfd; it is called in the upper directory, and
// again in the work directory when the name holds a whiteout that the new object must
// replace.
type maker func(dirfd int, name string) error

// createUpper creates name in directory n's upper copy, owned by the caller, and returns
// its path and attributes. Where the name holds a char whiteout the object is built in
// the work dir and renamed over it (a directory made there is opaque: it hides what the
// whiteout hid; kernel ovl_create_over_whiteout); a `.wh.NAME` file is removed after.
// setOwner is false for hard links (the object has its owner already).
//
// The object is made in place first: that succeeds unless something (an object or a
// char whiteout) holds the name, so the common case needs no look at the name before.
// It is chowned only when it did not get the caller's owner already (a daemon serving
// its own user, as root for root); kernel overlayfs does not chown either (it creates
// with the caller's fsuid/fsgid), so set-id bits are kept as the kernel keeps them.
func (n *node) createUpper(ctx context.Context, name string, isDir, setOwner bool, make maker) (*created, syscall.Errno) {
	var st unix.Stat_t
	if !n.ofs.stack.Writable {
		return nil, syscall.EROFS
	}
	if whiteout.IsInternalName(name) {
		return nil, syscall.EINVAL
	}
	up, rel, release, errno := n.upperDir()
	if errno != 0 {
		return nil, errno
	}
	made := false
	defer func() {
		if !made {
			release() // else the caller's, through created.close
		}
	}()
	rel = sysx.Join(rel, name)
	stack := n.ofs.stack
	var who *owner // the parent's owner rules, read when first needed
	owner := func() owner {
		if who == nil {
			o := n.ownerFor(ctx, up)
			who = &o
		}
		return *who
	}
	// own gives the new object nm in dirfd its owner and reads its attributes into st.
	own := func(dirfd int, nm string) error {
		if err := unix.Fstatat(dirfd, nm, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		if !setOwner {
			return nil
		}
		if attr := stack.WritesOverride(); attr != "" {
			if err := setOwnerOverride(dirfd, nm, attr, owner()); err != nil {
				return err
			}
		} else {
			// Made in its directory with the caller's owner: the filesystem gave it the
			// group of a set-group-ID parent already. Not so in the work dir (over a
			// whiteout), which is not set-group-ID.
			if uid, gid, ok := n.ofs.callerOwner(ctx); ok && dirfd == up && st.Uid == uint32(uid) && st.Gid == uint32(gid) {
				return nil
			}
			w := owner()
			if err := unix.Fchownat(dirfd, nm, w.uid, w.gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return err
			}
		}
		return unix.Fstatat(dirfd, nm, &st, unix.AT_SYMLINK_NOFOLLOW)
	}
	err := make(up, name)
	switch {
	case err == nil:
		// The name was free; a `.wh.NAME` file may still hide a lower NAME, if the
		// directory has a lower copy for it to hide one in.
		var wh bool
		if len(n.getLayers()) > 1 {
			wh, err = whiteout.HasWhiteoutFile(up, name)
		}
		if err == nil {
			err = own(up, name)
		}
		if err == nil && wh && isDir {
			err = stack.Format.SetOpaque(up, name)
		}
		if err != nil {
			layers.RemoveAt(up, name)
			return nil, toErrno(err)
		}
		if wh {
			if err := whiteout.Remove(up, name, whiteout.FileWhiteout); err != nil {
				n.changed()
				return nil, toErrno(err)
			}
		}
	case errors.Is(err, unix.EEXIST):
		kind, err := whiteout.At(up, name)
		if err != nil {
			return nil, toErrno(err)
		}
		if kind != whiteout.CharWhiteout {
			return nil, syscall.EEXIST
		}
		tmp := n.ofs.cp.TempName()
		if err := make(stack.Work, tmp); err != nil {
			return nil, toErrno(err)
		}
		if err := own(stack.Work, tmp); err != nil {
			layers.RemoveAt(stack.Work, tmp)
			return nil, toErrno(err)
		}
		if isDir && owner().setgid {
			// Built in the work dir, it did not inherit the parent's set-group-ID bit.
			if err := addMode(stack.Work, tmp, unix.S_ISGID); err != nil {
				layers.RemoveAt(stack.Work, tmp)
				return nil, toErrno(err)
			}
		}
		if isDir {
			if err := stack.Format.SetOpaque(stack.Work, tmp); err != nil {
				layers.RemoveAt(stack.Work, tmp)
				return nil, toErrno(err)
			}
			if err := unix.Renameat2(stack.Work, tmp, up, name, unix.RENAME_EXCHANGE); err != nil {
				layers.RemoveAt(stack.Work, tmp)
				return nil, toErrno(err)
			}
			unix.Unlinkat(stack.Work, tmp, 0) // the whiteout that came back
		} else if err := unix.Renameat(stack.Work, tmp, up, name); err != nil {
			layers.RemoveAt(stack.Work, tmp)
			return nil, toErrno(err)
		}
		if err := unix.Fstatat(up, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			n.changed()
			return nil, toErrno(err)
		}
	default:
		return nil, toErrno(err)
	}
	n.changed()
	stack.ApplyOverride(layers.Upper, up, name, &st) // xattr_permissions
	made = true
	return &created{up: up, release: release, name: name, rel: rel, st: st}, 0
}

// created is an object createUpper made: its upper directory (open until close), name,
// path and attributes.
type created struct {
	up        int
	release   func() // lets go of up
	name, rel string
	st        unix.Stat_t
}

func (c *created) close() { c.release() }

// newUpperChild makes the node for an object just created in the upper layer.
func (n *node) newUpperChild(ctx context.Context, c *created, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	st := &c.st
	n.ofs.fillEntry(out, st)
	e := lookup.Entry{Layers: []int{layers.Upper}, Mode: st.Mode & unix.S_IFMT, Ino: lookup.MapIno(n.ofs.stack, layers.Upper, st.Ino)}
	child := n.newChild(ctx, e)
	if cn, ok := child.Operations().(*node); ok {
		cn.remember(st)
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			// The kernel asks for security.capability before a new file's first write
			// and chown: read them now through the directory fd open here (not for
			// other objects, which nothing asks about right after: tar makes many
			// directories).
			cn.preloadXattrs(c.up, c.name)
		}
	}
	return child, 0
}

// setIDBits are the mode bits a chown clears, to be set again after it.
const setIDBits = unix.S_ISUID | unix.S_ISGID

var _ = (gofs.NodeCreater)((*node)(nil))

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	fd := -1
	f := n.ofs.layerFlags(flags)
	c, errno := n.createUpper(ctx, name, false, true, func(dirfd int, nm string) error {
		var err error
		fd, err = unix.Openat(dirfd, nm, f|unix.O_CREAT|unix.O_EXCL, mode&0o7777)
		return err
	})
	if errno != 0 {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, nil, 0, errno
	}
	defer c.close()
	if mode&setIDBits != 0 && (n.ofs.stack.WritesOverride() != "" || c.st.Mode&0o7777 != mode&0o7777) {
		// A chown cleared them.
		unix.Fchmod(fd, mode&0o7777)
		if st, err := n.ofs.statAt(layers.Upper, c.up, c.name); err == nil {
			c.st = st
		}
	}
	in, errno := n.newUpperChild(ctx, c, out)
	if errno != 0 {
		unix.Close(fd)
		return nil, nil, 0, errno
	}
	child := in.Operations().(*node)
	h := &handle{n: child, fd: fd, layer: layers.Upper, flags: f}
	child.admit(h) // a new node on the upper layer: always admitted
	return in, h, fuse.FOPEN_KEEP_CACHE, 0
}

var _ = (gofs.NodeMkdirer)((*node)(nil))

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	c, errno := n.createUpper(ctx, name, true, true, func(dirfd int, nm string) error {
		return unix.Mkdirat(dirfd, nm, mode&0o7777)
	})
	if errno != 0 {
		return nil, errno
	}
	defer c.close()
	return n.newUpperChild(ctx, c, out)
}

var _ = (gofs.NodeMknoder)((*node)(nil))

func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	c, errno := n.createUpper(ctx, name, false, true, func(dirfd int, nm string) error {
		if err := unix.Mknodat(dirfd, nm, mode, int(dev)); err != nil {
			return err
		}
		if mode&setIDBits != 0 {
			return sysx.ChmodNoFollow(dirfd, nm, mode&0o7777)
		}
		return nil
	})
	if errno != 0 {
		return nil, errno
	}
	defer c.close()
	return n.newUpperChild(ctx, c, out)
}

var _ = (gofs.NodeSymlinker)((*node)(nil))

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	c, errno := n.createUpper(ctx, name, false, true, func(dirfd int, nm string) error {
		return unix.Symlinkat(target, dirfd, nm)
	})
	if errno != 0 {
		return nil, errno
	}
	defer c.close()
	return n.newUpperChild(ctx, c, out)
}

var _ = (gofs.NodeLinker)((*node)(nil))

// Link copies the target up (a hard link is a change to it) and links it in the upper.
func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	t, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	multi := t.StableAttr().Gen != 0 && !t.isUpper()
	if errno := t.copyUpInDirOp(); errno != 0 {
		return nil, errno
	}
	src, srcName, lflags, done, errno := t.linkSource()
	if errno != 0 {
		return nil, errno
	}
	defer done()
	c, errno := n.createUpper(ctx, name, false, false, func(dirfd int, nm string) error {
		return unix.Linkat(src, srcName, dirfd, nm, lflags)
	})
	if errno != 0 {
		return nil, errno
	}
	defer c.close()
	t.named()
	if multi {
		// The copy of a lower hard link got a number of its own, which t cannot show.
		return n.newUpperChild(ctx, c, out)
	}
	st, errno := t.stat(c.rel)
	if errno != 0 {
		return nil, errno
	}
	n.ofs.fillEntry(out, &st)
	return t.EmbeddedInode(), 0
}
