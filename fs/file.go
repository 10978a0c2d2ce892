package fs

import (
	"context"
	"sync"
	"syscall"

	"github.com/cowfs/cowfs/internal/sysx"
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
	// passthrough (set before the open is answered, then read-only): the kernel reads
	// and writes the layer file itself (see passthrough.go and admit); otherwise the
	// handle counts in its node's cachedOpen until it is released.
	passthrough bool
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
	_ = (gofs.FilePassthroughFder)((*handle)(nil))
)

// backingFlags are the open flags passed to the layer file: only flags open(2) knows
// (sysx.OpenFlags: an exec's OPEN carries __FMODE_EXEC, which openat2 refuses), no
// creation (done before), no O_DIRECT (FUSE buffers are not aligned; the kernel
// handles direct I/O to us), and never following a symlink.
func backingFlags(flags uint32) int {
	f := int(flags) & sysx.OpenFlags &^ (unix.O_CREAT | unix.O_EXCL | unix.O_NOCTTY | unix.O_DIRECT | unix.O_TRUNC)
	return f | unix.O_NOFOLLOW | unix.O_CLOEXEC
}

// layerFlags are backingFlags adjusted to the data path. With the writeback cache the
// kernel reads pages to fill in partial writes, also through a file opened write-only
// (so the layer file is opened read-write, and O_NOATIME: such reads are the kernel's,
// which no reader asked for, and must not move the atime), and gives every write its
// offset, appends included (so the layer file must not append on its own).
func (o *overlayFS) layerFlags(flags uint32) int {
	f := backingFlags(flags)
	if o.data == dataWriteback {
		f &^= unix.O_APPEND
		if f&unix.O_ACCMODE == unix.O_WRONLY {
			f = f&^unix.O_ACCMODE | unix.O_RDWR | unix.O_NOATIME
		}
	}
	return f
}

// openLayerFile opens name with the flags of layerFlags, and returns the flags it used
// (without O_NOATIME). A lower layer's file, and an upper one that layerFlags asked it
// for, is opened O_NOATIME where the daemon may (sysx.OpenatNoatime), as kernel overlayfs
// opens every lower file. Where the daemon may not read the file (mode 0200, the daemon
// not root) it is opened write-only as asked: writes of whole pages work, and a partial
// one fails as it would have to.
func openLayerFile(dirfd int, name string, f int, lower bool) (int, int, error) {
	noatime := lower || f&unix.O_NOATIME != 0
	f &^= unix.O_NOATIME
	open := func(f int) (int, error) {
		if noatime {
			return sysx.OpenatNoatime(dirfd, name, f)
		}
		return unix.Openat(dirfd, name, f, 0)
	}
	fd, err := open(f)
	if err == unix.EACCES && f&unix.O_ACCMODE == unix.O_RDWR && f&unix.O_CREAT == 0 {
		f = f&^unix.O_ACCMODE | unix.O_WRONLY
		fd, err = open(f)
	}
	return fd, f, err
}

func wantsWrite(flags uint32) bool {
	return int(flags)&unix.O_ACCMODE != unix.O_RDONLY || int(flags)&unix.O_TRUNC != 0
}

var _ = (gofs.NodeOpener)((*node)(nil))

// Open opens the object in its topmost layer, copying it up first when the open may write.
func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if n.repointed() {
		// Replaced by a new node (admit): the kernel looks the name up again and opens
		// that one. Also when the old node left the tree, where rel would say ENOENT.
		return nil, 0, syscall.ESTALE
	}
	if wantsWrite(flags) {
		if !n.ofs.stack.Writable {
			return nil, 0, syscall.EROFS
		}
		if errno := n.copyUp(int(flags)&unix.O_TRUNC != 0); errno != 0 {
			return nil, 0, errno
		}
		if n.repointed() {
			// The copy-up gave a lower hard link a number of its own, so a new node
			// (copyUpNotify): the kernel retries the open there (as for admitRepoint).
			// A file written through this node would change the object behind the
			// new node's back: the kernel would keep the size it cached for it.
			return nil, 0, syscall.ESTALE
		}
	}
	f := n.ofs.layerFlags(flags)
	if int(flags)&unix.O_TRUNC != 0 {
		f |= unix.O_TRUNC
	}
	type opened struct{ fd, flags, layer int }
	for {
		o, errno := settle(n, func() (opened, syscall.Errno) {
			rel, errno := n.rel()
			if errno != 0 {
				return opened{}, errno
			}
			li := n.dataLayer() // a metacopy file's data is below its attributes
			if n.ofs.stack.Lower(li) {
				// One openat2 from the layer's root, as fuse-overlayfs opens a file,
				// where parentDir costs three calls (open the parent, open the file,
				// close the parent): 2,000 warm re-reads through the daemon took
				// 253 ms instead of 278 (medians of 9, fuse-overlayfs 241).
				fd, err := sysx.OpenBeneathNoatime(n.ofs.stack.Layers[li].Root, rel, f&^unix.O_NOATIME)
				if err != nil {
					return opened{}, toErrno(err)
				}
				return opened{fd, f &^ unix.O_NOATIME, li}, 0
			}
			dirfd, name, release, err := n.parentDir(li, rel)
			if err != nil {
				return opened{}, toErrno(err)
			}
			fd, ff, err := openLayerFile(dirfd, name, f, n.ofs.stack.Lower(li))
			release()
			if err != nil {
				return opened{}, toErrno(err)
			}
			return opened{fd, ff, li}, 0
		}, func(o opened) { unix.Close(o.fd) })
		if errno == syscall.ENOENT {
			// The node lost its name since the kernel resolved the path to it (an
			// unlink, a rename over it or of a directory above). A file renamed over
			// is opened through the fd kept of it (orphans, flux.go), as the kernel
			// opens the inode it resolved. Else ESTALE makes the kernel resolve the
			// path again (LOOKUP_REVAL) and open what the name holds now, if anything.
			fd, ok := n.ofs.openOrphan(n, f)
			if !ok {
				return nil, 0, syscall.ESTALE
			}
			o, errno = opened{fd, f, layers.Upper}, 0
		}
		if errno != 0 {
			return nil, 0, errno
		}
		fd, ff, li := o.fd, o.flags, o.layer
		h := &handle{n: n, fd: fd, layer: li, flags: ff}
		switch n.admit(h) {
		case admitMoved:
			// Copied up since we looked: open the upper copy instead.
			unix.Close(fd)
			continue
		case admitRepoint:
			unix.Close(fd)
			n.ofs.repoint(n)
			// Other names of the object may still lead the kernel to this node, with
			// attributes it keeps: drop them (Getattr keeps no new ones).
			n.NotifyContent(-1, 0)
			return nil, 0, syscall.ESTALE
		}
		if !h.passthrough && n.ofs.stack.Lower(li) {
			n.fillCache(fd)
		}
		return h, fuse.FOPEN_KEEP_CACHE, 0
	}
}

// fillCache hands a small lower file's data to the kernel's page cache
// (NOTIFY_STORE) the first time the node is opened through the daemon, before the OPEN
// is answered: the reads that follow find their pages and send no READ. A READ would
// cost a round trip, and its reply marks the inode's atime stale (fuse_readpages_end),
// so the next fstat would be a GETATTR: with the data stored, a first os.ReadFile of a
// small lower file is an OPEN and a RELEASE, and so is every one after it while the
// pages stay (TestRoundTripsTheKernelKeeps). Pages the kernel drops are read again by
// READ, as without this.
//
// Stored under the node's copy lock, and only while its data is in a lower layer: a
// copy-up cannot start meanwhile, so nothing written to the upper copy can be
// overwritten in the cache by the lower data. The kernel locks each page while it
// stores it; nothing that holds a page lock waits for this node's copy lock (a READ,
// a WRITE to an upper file and a page fault never take it).
func (n *node) fillCache(fd int) {
	n.mu.Lock()
	size, done := n.last.size, n.data&dataFilled != 0 || !n.last.valid()
	n.data |= dataFilled
	n.mu.Unlock()
	if done || size == 0 || size >= ptMinSize {
		return
	}
	defer n.ofs.lockCopy(n)()
	if n.isUpper() {
		return
	}
	buf := make([]byte, size)
	k, err := unix.Pread(fd, buf, 0)
	if err != nil || k <= 0 {
		return
	}
	n.WriteCache(0, buf[:k]) // an error leaves the pages to READ
}

// The bits of node.data.
const (
	dataLowerBacked uint8 = 1 << iota
	dataFilled
)

// admit's answers.
const (
	admitted     = iota
	admitMoved   // the data moved up since h was opened: open again
	admitRepoint // the open must go to a new node (repoint): answer ESTALE
)

// admit decides how h's data travels and counts it in its node. Decided under n.mu
// together with the node's layer, so a copy-up that ends after h was counted sees it,
// and one that ends before makes the opener open again (admitMoved; objects only move
// up, so that opens the upper copy).
//
// With passthrough the kernel reads and writes the layer file itself, lower files
// included (`tar` and builds read image files without a round trip per read). The
// kernel and go-fuse bind a node to one backing file: every open of an inode with a
// passed-through file open must be passed through to the same file (any other open is
// refused, EINVAL), and go-fuse hands every open of the node the backing file it
// registered first, until the last such file is released — after its own Release hook,
// so the daemon cannot know when that is. A node that ever had a lower file as its
// backing file (dataLowerBacked) therefore never opens its upper copy: after a copy-up the
// open answers ESTALE and the object gets a new node (repoint); the kernel retries the
// open once with a fresh lookup (do_filp_open's LOOKUP_REVAL), which finds the new
// node, same st_ino, next generation, no backing file yet. The old node keeps its
// open files: a read-only fd passed through to a lower file keeps reading that file
// after a copy-up (as on fuse-overlayfs, and on kernel overlayfs for a shared mmap);
// kernel overlayfs moves such an fd to the upper copy (ovl_real_fdget), which a handle
// going through the daemon still does (readFd). README, "Intended differences".
// A lower file smaller than ptMinSize goes through the daemon (smallLower): a
// dataLowerBacked node may get such opens too, which need no new node.
func (n *node) admit(h *handle) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ls := *n.layers; ls[len(ls)-1] != h.layer { // dataLayer: the last for a file
		return admitMoved
	}
	lower := h.layer != layers.Upper && n.ofs.stack.Writable
	pt := n.ofs.passthrough.Load() && n.cachedOpen == 0 && !n.smallLower(h.layer) &&
		n.ofs.backing.takes(h.layer, h.fd)
	switch {
	case pt && lower:
		h.passthrough = true
		n.data |= dataLowerBacked
	case n.data&dataLowerBacked != 0 && !n.ofs.stack.Lower(h.layer):
		return admitRepoint
	case pt:
		h.passthrough = true
	default:
		n.cachedOpen++
	}
	n.opens++
	return admitted
}

// smallLower reports whether an open of n's copy in layer li goes through the daemon
// although passthrough is on: a lower file smaller than ptMinSize, while no file of n
// is passed through (go-fuse would pass this one through too). n.mu held.
func (n *node) smallLower(li int) bool {
	return n.ofs.stack.Lower(li) && n.last.valid() && n.last.size < ptMinSize && n.opens == n.cachedOpen
}

// ptMinSize is the size from which a lower file is passed through. A passed-through
// open costs two ioctls (register and unregister the backing file) and the kernel's
// own open of the file, and each passed-through read marks the inode's atime stale
// (fuse_file_accessed), so the opener's next fstat is a GETATTR; a file read through
// the daemon is stored in the page cache with its first open (fillCache) and served
// from there (FOPEN_KEEP_CACHE; a lower file never changes): every read of it is an
// OPEN and a RELEASE. Small files are what builds and
// interpreters re-read. Measured (README, "Data path"): a third os.ReadFile of 2,000
// small files 335 → 248 ms, TestTwentyMountsShareLowers 30 → 18–25 s, and no change
// to a cold `tar` of small files at 32 KiB.
const ptMinSize = 64 << 10

// PassthroughFd is asked by go-fuse once per open, when the node has no backing file
// yet; the kernel then opens its own file on the same path with the opener's flags.
func (h *handle) PassthroughFd() (int, bool) {
	if !h.passthrough {
		return -1, false
	}
	return h.fd, true
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
	dirfd, name, release, err := h.n.parentDir(layers.Upper, rel)
	if err != nil {
		return h.fd, 0
	}
	defer release()
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
		h.n.mu.Lock()
		if !h.passthrough {
			h.n.cachedOpen--
		}
		h.n.opens--
		h.n.mu.Unlock()
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
	st, errno := h.stat()
	if errno != 0 {
		return errno
	}
	h.n.ofs.fillAttr(out, &st)
	return 0
}

// stat reads the attributes of the open file: through its fd (moved to the upper copy
// once the data is there, see readFd), which no rename or unlink of its name changes.
func (h *handle) stat() (unix.Stat_t, syscall.Errno) {
	fd, errno := h.readFd()
	if errno != 0 {
		return unix.Stat_t{}, errno
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return st, toErrno(err)
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
	return st, 0
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
