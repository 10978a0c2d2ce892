package fs

import (
	"context"
	"syscall"

	"github.com/cowfs/cowfs/internal/sysx"
	"github.com/cowfs/cowfs/layers"
	"github.com/cowfs/cowfs/lookup"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

var (
	_ = (gofs.NodeTmpfiler)((*node)(nil))
	_ = (gofs.NodeOnForgetter)((*node)(nil))
)

// Tmpfile makes an unnamed file (open with O_TMPFILE) in the directory's upper copy.
func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if !n.ofs.stack.Writable {
		return nil, nil, 0, syscall.EROFS
	}
	up, _, release, errno := n.upperDir()
	if errno != 0 {
		return nil, nil, 0, errno
	}
	defer release()
	f := n.ofs.layerFlags(flags)&^unix.O_NOFOLLOW | unix.O_TMPFILE
	fd, err := unix.Openat(up, ".", f, mode&0o7777)
	if err != nil {
		return nil, nil, 0, toErrno(err)
	}
	who := n.ownerFor(ctx, up)
	if err := unix.Fchown(fd, who.uid, who.gid); err != nil {
		unix.Close(fd)
		return nil, nil, 0, toErrno(err)
	}
	if mode&setIDBits != 0 {
		unix.Fchmod(fd, mode&0o7777)
	}
	anon, err := unix.Dup(fd)
	if err != nil {
		unix.Close(fd)
		return nil, nil, 0, toErrno(err)
	}
	unix.CloseOnExec(anon)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		unix.Close(anon)
		return nil, nil, 0, toErrno(err)
	}
	n.ofs.fillEntry(out, &st)
	child := &node{ofs: n.ofs, layers: n.ofs.internLayers([]int{layers.Upper}), anon: true}
	n.ofs.anonFds.Store(child, anon)
	in := n.NewInode(ctx, child, gofs.StableAttr{Mode: unix.S_IFREG, Ino: lookup.MapIno(n.ofs.stack, layers.Upper, st.Ino)})
	h := &handle{n: in.Operations().(*node), fd: fd, layer: layers.Upper, flags: f}
	h.n.admit(h)
	return in, h, fuse.FOPEN_KEEP_CACHE, 0
}

// linkSource names node t for linkat: by parent fd and name, or, for an unnamed
// O_TMPFILE file, by its /proc fd path (which linkat follows with AT_SYMLINK_FOLLOW).
func (t *node) linkSource() (dirfd int, name string, flags int, done func(), errno syscall.Errno) {
	t.mu.Lock()
	anon := t.anon
	var anonFd any
	if anon {
		anonFd, anon = t.ofs.anonFds.Load(t)
	}
	t.mu.Unlock()
	if anon {
		return unix.AT_FDCWD, sysx.ProcPath(anonFd.(int), ""), unix.AT_SYMLINK_FOLLOW, func() {}, 0
	}
	rel, errno := t.rel()
	if errno != 0 {
		return -1, "", 0, nil, errno
	}
	dirfd, name, release, err := t.parentDir(layers.Upper, rel)
	if err != nil {
		return -1, "", 0, nil, toErrno(err)
	}
	return dirfd, name, 0, release, 0
}

// named records that an O_TMPFILE file got a name: it is reached through it from now on.
func (t *node) named() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.anon {
		if fd, ok := t.ofs.anonFds.LoadAndDelete(t); ok {
			unix.Close(fd.(int))
		}
		t.anon = false
	}
}

// OnForget releases what an unnamed file held once the kernel forgets it, and a
// directory's kept fds.
func (n *node) OnForget() {
	n.named()
	n.dropUpperFD(nil)
	n.ofs.dropLower(n)
	n.ofs.dropOrphan(n)
}
