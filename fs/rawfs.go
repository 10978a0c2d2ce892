package fs

import (
	"github.com/hanwen/go-fuse/v2/fuse"
)

// rawFS is go-fuse's node bridge with one change: directories are opened by the kernel
// alone. OPENDIR answers ENOSYS, which the kernel takes (fuse_do_open) as "opendir not
// needed": it stops sending OPENDIR and RELEASEDIR, and keeps every directory's listing
// in its page cache (FOPEN_CACHE_DIR|FOPEN_KEEP_CACHE, its default then) until a change
// through this mount drops it. A walk of a warm tree then costs no round trip per
// directory instead of two. READDIR(PLUS) and FSYNCDIR arrive without a handle; each
// gets a handle of its own for the length of the request, and the listing's offsets
// (see dirHandle) carry what a handle would have kept between requests.
type rawFS struct {
	fuse.RawFileSystem
}

func (r rawFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
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
