package fs

import (
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// rawFS is go-fuse's node bridge with one change: directories are opened by the kernel
// alone. OPENDIR answers ENOSYS, which the kernel takes (fuse_do_open) as "opendir not
// needed": it stops sending OPENDIR and RELEASEDIR, and keeps every directory's listing
// in its page cache (FOPEN_CACHE_DIR|FOPEN_KEEP_CACHE, its default then) until a change
// through this mount drops it. A walk of a warm tree then costs no round trip per
// directory instead of two. READDIR(PLUS) and FSYNCDIR arrive without a handle; each
// gets a handle of its own for the length of the request, and the listing's offsets
// (see dirHandle) carry what a handle would have kept between requests.
//
// It also takes over from the kernel the clearing of set-ID bits on write, truncate and
// open with O_TRUNC (FUSE_HANDLE_KILLPRIV_V2, asked for in Mount): the kernel then stops
// asking for security.capability before writes, one round trip each. The kernel marks
// the requests whose caller lacks CAP_FSETID; the daemon has CAP_FSETID, so its own
// write would keep the bits, and it clears them itself. (A file capability is dropped by
// the upper filesystem on the daemon's write, chown and truncate, as for any writer.)
//
// And it retries, once, a request that may allocate space in the upper and failed with
// ENOSPC or EDQUOT, after the reaper has removed what it still holds (reaper.drain): a
// file deleted just before gives its space back before the caller is told there is none.
type rawFS struct {
	fuse.RawFileSystem
	ofs *overlayFS
}

// noSpace reports whether a request that answered st should run again: it failed for
// lack of space, and the reaper has just freed some.
func (r rawFS) noSpace(st fuse.Status) bool {
	return (st == fuse.Status(unix.ENOSPC) || st == fuse.Status(unix.EDQUOT)) && r.ofs.reap != nil && r.ofs.reap.drain()
}

// retry runs req, and once more if it failed for lack of space and the reaper has just
// freed some.
func (r rawFS) retry(req func() fuse.Status) fuse.Status {
	st := req()
	if r.noSpace(st) {
		st = req()
	}
	return st
}

// retryN is retry for a request that also answers a count.
func (r rawFS) retryN(req func() (uint32, fuse.Status)) (uint32, fuse.Status) {
	n, st := req()
	if r.noSpace(st) {
		n, st = req()
	}
	return n, st
}

func (r rawFS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return r.retry(func() fuse.Status { return r.RawFileSystem.Mknod(cancel, in, name, out) })
}

func (r rawFS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return r.retry(func() fuse.Status { return r.RawFileSystem.Mkdir(cancel, in, name, out) })
}

// Unlink and Rmdir may write a whiteout. Unlink, Rmdir and Rename end the name
// changes their handlers started once go-fuse has moved its nodes (flux.go).
func (r rawFS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	defer r.ofs.endFlux(cancel)
	return r.retry(func() fuse.Status { return r.RawFileSystem.Unlink(cancel, h, name) })
}

// Rmdir and Rename count themselves in dirOps until go-fuse has moved its nodes
// (dirfd.go).
func (r rawFS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	r.ofs.dirOps.Add(1)
	defer r.ofs.dirOps.Add(-1)
	defer r.ofs.endFlux(cancel)
	return r.retry(func() fuse.Status { return r.RawFileSystem.Rmdir(cancel, h, name) })
}

func (r rawFS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	r.ofs.dirOps.Add(1)
	defer r.ofs.dirOps.Add(-1)
	defer r.ofs.endFlux(cancel)
	return r.retry(func() fuse.Status { return r.RawFileSystem.Rename(cancel, in, oldName, newName) })
}

func (r rawFS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	return r.retry(func() fuse.Status { return r.RawFileSystem.Link(cancel, in, name, out) })
}

func (r rawFS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	return r.retry(func() fuse.Status { return r.RawFileSystem.Symlink(cancel, h, target, name, out) })
}

func (r rawFS) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	return r.retry(func() fuse.Status { return r.RawFileSystem.SetXAttr(cancel, in, attr, data) })
}

func (r rawFS) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	return r.retry(func() fuse.Status { return r.RawFileSystem.RemoveXAttr(cancel, h, attr) })
}

func (r rawFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	return r.retry(func() fuse.Status { return r.RawFileSystem.Create(cancel, in, name, out) })
}

func (r rawFS) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	return r.retry(func() fuse.Status { return r.RawFileSystem.Tmpfile(cancel, in, out) })
}

func (r rawFS) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	return r.retryN(func() (uint32, fuse.Status) { return r.RawFileSystem.CopyFileRange(cancel, in) })
}

func (r rawFS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	return r.retry(func() fuse.Status { return r.RawFileSystem.Fallocate(cancel, in) })
}

func (r rawFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	n, st := r.retryN(func() (uint32, fuse.Status) { return r.RawFileSystem.Write(cancel, in, data) })
	r.wrote(cancel, in, n, st)
	return n, st
}

func (r rawFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	n, st := r.retryN(func() (uint32, fuse.Status) { return r.RawFileSystem.Writev(cancel, in, data) })
	r.wrote(cancel, in, n, st)
	return n, st
}

// wrote clears set-ID bits after a write the kernel marked for it.
func (r rawFS) wrote(cancel <-chan struct{}, in *fuse.WriteIn, n uint32, st fuse.Status) {
	if st.Ok() && n > 0 && in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		r.killSuidgid(cancel, &in.InHeader)
	}
}

func (r rawFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	st := r.retry(func() fuse.Status { return r.RawFileSystem.SetAttr(cancel, in, out) })
	if st.Ok() && in.Valid&fuse.FATTR_KILL_SUIDGID != 0 && in.Valid&fuse.FATTR_MODE == 0 {
		if mode, ok := r.killSuidgid(cancel, &in.InHeader); ok {
			out.Mode = out.Mode&^07777 | mode
		}
	}
	return st
}

func (r rawFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := r.retry(func() fuse.Status { return r.RawFileSystem.Open(cancel, in, out) })
	if st.Ok() && in.Flags&unix.O_TRUNC != 0 && in.Mode&fuse.OPEN_KILL_SUIDGID != 0 {
		r.killSuidgid(cancel, &in.InHeader)
	}
	return st
}

// killSuidgid clears the set-user-ID bit of node h.NodeId, and its set-group-ID bit when
// it is group-executable (what the kernel clears on a write by a caller without
// CAP_FSETID); it returns the mode it left when it changed it.
func (r rawFS) killSuidgid(cancel <-chan struct{}, h *fuse.InHeader) (uint32, bool) {
	var attr fuse.AttrOut
	if !r.RawFileSystem.GetAttr(cancel, &fuse.GetAttrIn{InHeader: *h}, &attr).Ok() {
		return 0, false
	}
	mode := attr.Mode & 07777
	kill := uint32(unix.S_ISUID)
	if mode&unix.S_IXGRP != 0 {
		kill |= unix.S_ISGID
	}
	if mode&kill == 0 || attr.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0, false
	}
	set := fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: *h, Valid: fuse.FATTR_MODE, Mode: mode &^ kill}}
	var out fuse.AttrOut
	if !r.RawFileSystem.SetAttr(cancel, &set, &out).Ok() {
		return 0, false
	}
	return mode &^ kill, true
}

func (r rawFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return fuse.ENOSYS
}

// Flush answers ENOSYS, which the kernel takes as "no FLUSH needed" for good (fc->no_flush):
// a close then costs no round trip. cowfs has nothing to do at close (no locks handed to
// the daemon, no buffered data: the kernel writes cached pages back before it would send
// FLUSH).
func (r rawFS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	return fuse.ENOSYS
}

func (r rawFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return r.withDir(cancel, in, func(in *fuse.ReadIn) fuse.Status {
		return r.RawFileSystem.ReadDir(cancel, in, out)
	})
}

func (r rawFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return r.withDir(cancel, in, func(in *fuse.ReadIn) fuse.Status {
		return r.RawFileSystem.ReadDirPlus(cancel, in, out)
	})
}

func (r rawFS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if in.Fh != 0 {
		return r.RawFileSystem.FsyncDir(cancel, in)
	}
	fh, st := r.openDir(cancel, &in.InHeader)
	if !st.Ok() {
		return st
	}
	defer r.releaseDir(&in.InHeader, fh)
	in2 := *in
	in2.Fh = fh
	return r.RawFileSystem.FsyncDir(cancel, &in2)
}

// withDir runs a directory read with a handle of its own when the kernel sent none.
func (r rawFS) withDir(cancel <-chan struct{}, in *fuse.ReadIn, read func(*fuse.ReadIn) fuse.Status) fuse.Status {
	if in.Fh != 0 {
		return read(in)
	}
	fh, st := r.openDir(cancel, &in.InHeader)
	if !st.Ok() {
		return st
	}
	defer r.releaseDir(&in.InHeader, fh)
	in2 := *in
	in2.Fh = fh
	return read(&in2)
}

func (r rawFS) openDir(cancel <-chan struct{}, h *fuse.InHeader) (uint64, fuse.Status) {
	var out fuse.OpenOut
	st := r.RawFileSystem.OpenDir(cancel, &fuse.OpenIn{InHeader: *h, Flags: 0}, &out)
	return out.Fh, st
}

func (r rawFS) releaseDir(h *fuse.InHeader, fh uint64) {
	r.RawFileSystem.ReleaseDir(&fuse.ReleaseIn{InHeader: *h, Fh: fh})
}
