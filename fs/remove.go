package fs

import (
	"context"
	"errors"
	"syscall"

	"github.com/cowfs/cowfs/internal/sysx"
	"github.com/cowfs/cowfs/layers"
	"github.com/cowfs/cowfs/lookup"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// childEntry resolves name in directory n.
func (n *node) childEntry(name string) (string, lookup.Entry, syscall.Errno) {
	rel, errno := n.rel()
	if errno != 0 {
		return "", lookup.Entry{}, errno
	}
	e, err := n.ofs.res.Lookup(n.dir(rel), name)
	if err != nil {
		return rel, e, toErrno(err)
	}
	return rel, e, 0
}

// lowerPositive reports whether a lower layer would show name in n once the upper entry
// is gone, i.e. whether removing it needs a whiteout (kernel ovl_lower_positive).
func (n *node) lowerPositive(rel, name string) (bool, syscall.Errno) {
	_, err := n.ofs.res.LookupBelow(n.dir(rel), name)
	if err == nil {
		return true, 0
	}
	if errors.Is(err, unix.ENOENT) {
		return false, 0
	}
	return false, toErrno(err)
}

// removal is one UNLINK or RMDIR's view of directory n: its layer fds, opened once for
// the lookup of the name and reused to change the upper copy.
type removal struct {
	n    *node
	rel  string
	fds  *lookup.DirFds
	name string
	e    lookup.Entry
	// up is the upper copy opened by upper when the lookup had not (-1: none), and
	// upRelease lets go of it.
	up        int
	upRelease func()
}

// startRemoval resolves name in directory n for its removal; done must be called after.
func (n *node) startRemoval(name string) (*removal, syscall.Errno) {
	rel, errno := n.rel()
	if errno != 0 {
		return nil, errno
	}
	r := &removal{n: n, rel: rel, fds: n.keptDirFds(rel), name: name, up: -1}
	e, err := n.ofs.res.LookupIn(r.fds, n.dir(rel), name)
	if err != nil {
		r.done()
		return nil, toErrno(err)
	}
	r.e = e
	return r, 0
}

func (r *removal) done() {
	r.fds.Close()
	if r.up >= 0 {
		r.upRelease()
	}
}

// upper is the directory's upper copy (copied up first if needed), open until done.
func (r *removal) upper() (int, syscall.Errno) {
	if r.up >= 0 {
		return r.up, 0
	}
	if r.n.isUpper() {
		if fd, err := r.fds.Get(layers.Upper); err == nil {
			return fd, 0
		}
	}
	up, _, release, errno := r.n.upperDir()
	if errno != 0 {
		return -1, errno
	}
	r.up, r.upRelease = up, release
	return up, 0
}

var _ = (gofs.NodeUnlinker)((*node)(nil))

// Unlink removes a name; a lower one is hidden by a whiteout, never copied up first.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	end := n.ofs.startFlux(ctx, n)
	errno := n.unlink(name)
	end(errno != 0)
	return errno
}

func (n *node) unlink(name string) syscall.Errno {
	if !n.ofs.stack.Writable {
		return syscall.EROFS
	}
	r, errno := n.startRemoval(name)
	if errno != 0 {
		return errno
	}
	defer r.done()
	e := r.e
	if e.Mode == unix.S_IFDIR {
		return syscall.EISDIR
	}
	// A file open here stays openable through /proc/self/fd after its last name goes,
	// as on the kernel: keep an fd of it for the node (orphans, flux.go).
	c := n.child(name)
	orphan := -1
	if c != nil && e.Mode == unix.S_IFREG && e.Layers[0] == layers.Upper && c.isOpen() {
		if up, errno := r.upper(); errno == 0 {
			orphan, _ = unix.Openat(up, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		}
	}
	if errno := r.remove(false); errno != 0 {
		if orphan >= 0 {
			unix.Close(orphan)
		}
		return errno
	}
	if orphan >= 0 {
		n.ofs.keepOrphan(c, orphan)
	}
	if c != nil && e.Layers[0] == layers.Upper {
		// A lower object only got hidden: its own link count does not change (the
		// kernel's fstat asks the lower inode too).
		c.unlinked()
	}
	return 0
}

var _ = (gofs.NodeRmdirer)((*node)(nil))

// Rmdir removes a directory that is empty in the merged view (lower entries that are not
// whited out count).
func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	end := n.ofs.startFlux(ctx, n)
	errno := n.rmdir(name)
	end(errno != 0)
	return errno
}

func (n *node) rmdir(name string) syscall.Errno {
	if !n.ofs.stack.Writable {
		return syscall.EROFS
	}
	// An upper directory may go (dirfd.go).
	n.ofs.dirChanging()
	r, errno := n.startRemoval(name)
	if errno != 0 {
		return errno
	}
	defer r.done()
	e := r.e
	if e.Mode != unix.S_IFDIR {
		return syscall.ENOTDIR
	}
	upperOnly := len(e.Layers) == 1 && e.Layers[0] == layers.Upper
	removed := false
	if upperOnly {
		// Only the upper holds it: empty on disk is empty in the merged view, and rmdir
		// says so. Only one that holds something (whiteouts hide nothing in it) is listed.
		needWhiteout, errno := n.lowerPositive(r.rel, name)
		if errno != 0 {
			return errno
		}
		if !needWhiteout {
			up, errno := r.upper()
			if errno != 0 {
				return errno
			}
			err := n.ofs.rmdirUpper(up, name)
			if err == nil {
				n.changed()
				removed = true
			} else if !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
				return toErrno(err)
			}
		}
	}
	if !removed {
		ents, _, err := n.ofs.mergedEntries(sysx.Join(r.rel, name), e.Layers, nil)
		if err != nil {
			return toErrno(err)
		}
		if len(ents) > 0 {
			return syscall.ENOTEMPTY
		}
		if errno := r.remove(true); errno != 0 {
			return errno
		}
	}
	if c := n.child(name); c != nil && upperOnly {
		// fstat through a directory fd still open shows the removed upper directory,
		// with no links; a removed lower directory is only hidden, and keeps its own.
		c.removedDir()
	}
	return 0
}

// removedDir records that the directory was removed (see Rmdir).
func (n *node) removedDir() {
	n.mu.Lock()
	n.last.nlink = 0
	n.mu.Unlock()
}

// remove takes the name out of directory n: unlinks the upper entry, and leaves a
// whiteout where a lower entry would show through.
func (r *removal) remove(isDir bool) syscall.Errno {
	n, name, e := r.n, r.name, r.e
	needWhiteout, errno := n.lowerPositive(r.rel, name)
	if errno != 0 {
		return errno
	}
	up, errno := r.upper()
	if errno != 0 {
		return errno
	}
	st := n.ofs.stack
	if e.Layers[0] != layers.Upper {
		// Only in lower layers: a whiteout hides it; nothing is copied up.
		if err := st.Format.Create(up, name); err != nil {
			return toErrno(err)
		}
		n.changed()
		return 0
	}
	later := int64(-1) // the bytes to hand to the reaper, or -1 to remove in place
	if !isDir {
		later = r.deferBytes(up)
	}
	if needWhiteout && st.Format.CharDev {
		// Atomically swap the upper entry for a whiteout, then drop it from the work dir.
		tmp := n.ofs.cp.TempName()
		if err := unix.Renameat2(up, name, st.Work, tmp, unix.RENAME_WHITEOUT); err == nil {
			n.changed()
			return toErrno(n.ofs.dropWork(tmp, later))
		}
	}
	if later >= 0 {
		if err := n.ofs.unlinkLater(up, name, 0, later); err != nil {
			return toErrno(err)
		}
	} else if err := n.ofs.removeUpper(up, name, isDir); err != nil {
		return toErrno(err)
	}
	if needWhiteout {
		if err := st.Format.Create(up, name); err != nil {
			n.changed()
			return toErrno(err)
		}
	}
	n.changed()
	return 0
}

// deferBytes returns the space held by the upper file being removed if it may be
// unlinked later (reap.go), else -1: it must be a regular file with one link that no
// file of ours holds open.
func (r *removal) deferBytes(up int) int64 {
	if r.n.ofs.reap == nil || r.e.Mode != unix.S_IFREG {
		return -1
	}
	if c := r.n.child(r.name); c != nil && c.isOpen() {
		return -1
	}
	st := r.e.Stat // the upper copy's, as this removal's lookup read it
	if st == nil { // the lookup came from the cache
		st = new(unix.Stat_t)
		if err := unix.Fstatat(up, r.name, st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return -1
		}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
		return -1
	}
	return st.Blocks * 512
}

// unlinkLater moves name of the upper directory up to the work dir and hands it to the
// reaper (it holds bytes), or unlinks it in place (unlinkat with flags) if the move fails.
func (o *overlayFS) unlinkLater(up int, name string, flags int, bytes int64) error {
	tmp := o.cp.TempName()
	if err := unix.Renameat(up, name, o.stack.Work, tmp); err != nil {
		return unix.Unlinkat(up, name, flags)
	}
	return o.dropWork(tmp, bytes)
}

// rmdirUpper removes the directory name of the upper directory up, as rmdir(2) does
// (ENOTEMPTY when it holds anything). An empty one is moved to the work dir and removed
// by the reaper, like a file (reap.go): removing it frees its block, which waits for
// the discard on this machine (330 µs, against 50 µs for reading it and the rename).
// The kernel holds the directory's lock through the RMDIR, so nothing can be created in
// it between the look and the move.
func (o *overlayFS) rmdirUpper(up int, name string) error {
	if o.reap == nil || !dirEmpty(up, name) {
		return unix.Unlinkat(up, name, unix.AT_REMOVEDIR)
	}
	return o.unlinkLater(up, name, unix.AT_REMOVEDIR, dirBytes)
}

// dirBytes is what an empty directory is taken to hold, for the reaper's budget: one block.
const dirBytes = 4096

// dirEmpty reports whether the directory name of dirfd holds nothing; false when it
// cannot tell.
func dirEmpty(dirfd int, name string) bool {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	empty := true
	err = readDirents(fd, func(n string, _ uint64, _ uint8) {
		empty = empty && (n == "." || n == "..")
	})
	return err == nil && empty
}

// dropWork removes tmp, moved to the work dir by a removal: by the reaper if it holds
// bytes >= 0 and the reaper has room, else at once.
func (o *overlayFS) dropWork(tmp string, bytes int64) error {
	if bytes >= 0 && o.reap.add(tmp, bytes) {
		return nil
	}
	return layers.RemoveAt(o.stack.Work, tmp)
}

// removeUpper removes name from the upper directory up; a directory that still holds
// whiteouts is moved to the work dir and emptied there.
func (o *overlayFS) removeUpper(up int, name string, isDir bool) error {
	if !isDir {
		return unix.Unlinkat(up, name, 0)
	}
	err := unix.Unlinkat(up, name, unix.AT_REMOVEDIR)
	if !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
		return err
	}
	tmp := o.cp.TempName()
	if err := unix.Renameat(up, name, o.stack.Work, tmp); err != nil {
		return err
	}
	return layers.RemoveAt(o.stack.Work, tmp)
}
