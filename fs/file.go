package fs

import (
	"context"
	"sync"
	"syscall"

	"github.com/cowfs/cowfs/layers"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// handle is an open file: an fd on the object in one layer.
type handle struct {
	n *node
	// mu guards fd and layer: a read-only handle opened on a lower file moves to the
	// upper copy after a copy-up, as kernel overlayfs's ovl_real_fdget does.
	mu    sync.Mutex
	fd    int
	layer int
	flags int
}

var (
	_ = (gofs.FileReader)((*handle)(nil))
	_ = (gofs.FileWriter)((*handle)(nil))
	_ = (gofs.FileReleaser)((*handle)(nil))
	_ = (gofs.FileFsyncer)((*handle)(nil))
	_ = (gofs.FileFlusher)((*handle)(nil))
	_ = (gofs.FileAllocater)((*handle)(nil))
	_ = (gofs.FileLseeker)((*handle)(nil))
	_ = (gofs.FileGetattrer)((*handle)(nil))
)

// backingFlags are the open flags passed to the layer file: no creation (done before),
// no O_DIRECT (FUSE buffers are not aligned; the kernel handles direct I/O to us), and
// never following a symlink.
func backingFlags(flags uint32) int {
	f := int(flags) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_NOCTTY | unix.O_DIRECT | unix.O_TRUNC)
	return f | unix.O_NOFOLLOW | unix.O_CLOEXEC
}

func wantsWrite(flags uint32) bool {
	return int(flags)&unix.O_ACCMODE != unix.O_RDONLY || int(flags)&unix.O_TRUNC != 0
}

var _ = (gofs.NodeOpener)((*node)(nil))

// Open opens the object in its topmost layer, copying it up first when the open may write.
func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if wantsWrite(flags) {
		if !n.ofs.stack.Writable {
			return nil, 0, syscall.EROFS
		}
		if errno := n.copyUp(int(flags)&unix.O_TRUNC != 0); errno != 0 {
			return nil, 0, errno
		}
	}
	rel, errno := n.rel()
	if errno != 0 {
		return nil, 0, errno
	}
	li := n.dataLayer() // a metacopy file's data is below its attributes
	dirfd, name, err := n.ofs.stack.OpenParent(li, rel)
	if err != nil {
		return nil, 0, toErrno(err)
	}
	defer unix.Close(dirfd)
	f := backingFlags(flags)
	if int(flags)&unix.O_TRUNC != 0 {
		f |= unix.O_TRUNC
	}
	fd, err := unix.Openat(dirfd, name, f, 0)
	if err != nil {
		return nil, 0, toErrno(err)
	}
	return &handle{n: n, fd: fd, layer: li, flags: f}, fuse.FOPEN_KEEP_CACHE, 0
}

// readFd returns the fd to read from, moving a handle opened on a lower file to the
// upper copy once the file was copied up (so it sees writes made through other fds).
func (h *handle) readFd() (int, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.layer == layers.Upper || !h.n.ofs.stack.Writable || !h.n.upToDate(copyAll) {
		return h.fd, 0
	}
	rel, errno := h.n.rel()
	if errno != 0 {
		return h.fd, 0 // unlinked meanwhile: keep reading what we have
	}
	dirfd, name, err := h.n.ofs.stack.OpenParent(layers.Upper, rel)
	if err != nil {
		return h.fd, 0
	}
	defer unix.Close(dirfd)
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return h.fd, 0
	}
	unix.Close(h.fd)
	h.fd, h.layer = fd, layers.Upper
	return fd, 0
}

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	fd, errno := h.readFd()
	if errno != 0 {
		return nil, errno
	}
	k, err := unix.Pread(fd, dest, off)
	if err != nil {
		return nil, toErrno(err)
	}
	return fuse.ReadResultData(dest[:k]), 0
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.mu.Lock()
	fd := h.fd
	h.mu.Unlock()
	k, err := unix.Pwrite(fd, data, off)
	if err != nil {
		return 0, toErrno(err)
	}
	return uint32(k), 0
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fd >= 0 {
		unix.Close(h.fd)
		h.fd = -1
	}
	return 0
}

func (h *handle) Flush(ctx context.Context) syscall.Errno { return 0 }

func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if h.n.ofs.stack.Opts.Volatile {
		return 0
	}
	h.mu.Lock()
	fd := h.fd
	h.mu.Unlock()
	var err error
	if flags&1 != 0 {
		err = unix.Fdatasync(fd)
	} else {
		err = unix.Fsync(fd)
	}
	return toErrno(err)
}

func (h *handle) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	h.mu.Lock()
	fd := h.fd
	h.mu.Unlock()
	return toErrno(unix.Fallocate(fd, mode, int64(off), int64(size)))
}

func (h *handle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	fd, errno := h.readFd()
	if errno != 0 {
		return 0, errno
	}
	n, err := unix.Seek(fd, int64(off), int(whence))
	if err != nil {
		return 0, toErrno(err)
	}
	return uint64(n), 0
}

func (h *handle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	fd, errno := h.readFd()
	if errno != 0 {
		return errno
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return toErrno(err)
	}
	h.mu.Lock()
	li := h.layer
	h.mu.Unlock()
	h.n.ofs.stack.ApplyOverride(li, fd, "", &st)
	if h.n.isMetacopy() {
		// fd is the data below; the attributes are the upper copy's.
		if rel, errno := h.n.rel(); errno == 0 {
			if mst, errno := h.n.stat(rel); errno == 0 {
				st = mst
			}
		}
	}
	h.n.ofs.fillAttr(out, &st)
	return 0
}

// ftruncate truncates through the handle when it is open for writing on the upper.
func (h *handle) ftruncate(size uint64) (bool, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.layer != layers.Upper || h.flags&unix.O_ACCMODE == unix.O_RDONLY || !h.n.ofs.stack.Writable {
		return false, 0
	}
	return true, toErrno(unix.Ftruncate(h.fd, int64(size)))
}
