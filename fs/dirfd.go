package fs

import (
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/cowfs/cowfs/internal/sysx"
	"github.com/cowfs/cowfs/layers"
	"github.com/cowfs/cowfs/lookup"
	"golang.org/x/sys/unix"
)

// Upper directory fds, kept by their nodes.
//
// Every request that changes or looks into a directory's upper copy needs an fd of it,
// and resolving its path again from the upper root (openat2 with RESOLVE_BENEATH, then
// close) was two of the daemon's syscalls in five: `tar -xf` of 2,000 files made
// 28,000 openat2 and 30,000 close. So a directory node keeps the O_PATH fd of its upper
// copy once opened, and lends it to the requests on the node and on its entries.
//
// An fd follows its directory when the directory is renamed, as the node does; what
// could make it wrong is a directory removed, or replaced at its name, and a path
// resolved while a directory was being moved. So:
//   - before a request removes, replaces or moves an upper directory (RMDIR, a RENAME
//     of or over a directory) it bumps dirEpoch, and an fd opened under an older epoch
//     is never lent again;
//   - rawFS counts the RENAME and RMDIR requests in progress (dirOps), from before the
//     node sees them until go-fuse has moved its nodes: an fd opened while any is in
//     progress is used by its request only, not kept;
//   - an fd is kept only if the epoch did not change between before the path was
//     resolved and after it was opened.
//
// The nodes keep at most a quarter of the daemon's RLIMIT_NOFILE (and at most
// maxDirFds): each new one takes the place of the oldest, in a ring (dirRing). A node
// also closes its fd when the kernel forgets it.

// maxDirFds is the most upper directory fds the nodes keep together.
const maxDirFds = 16384

// dirRing holds the nodes that keep directory fds, oldest first from next.
type dirRing struct {
	mu    sync.Mutex
	nodes []*node // guarded by mu
	next  int     // guarded by mu
	// drop makes a node let go of its fds.
	drop func(*node)
}

// dirFdBudget is how many directory fds each ring may keep: a quarter of the daemon's
// RLIMIT_NOFILE, at most maxDirFds.
func dirFdBudget() int {
	n := maxDirFds
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil && lim.Cur/4 < uint64(n) {
		n = max(int(lim.Cur/4), 1)
	}
	return n
}

// newDirRing makes a ring of n nodes.
func newDirRing(n int, drop func(*node)) *dirRing {
	return &dirRing{nodes: make([]*node, max(n, 1)), drop: drop}
}

// close lets go of every kept fd.
func (r *dirRing) close() {
	r.mu.Lock()
	nodes := r.nodes
	r.nodes = nil
	r.mu.Unlock()
	for _, n := range nodes {
		if n != nil {
			r.drop(n)
		}
	}
}

// add records that n keeps an fd, and returns the node whose place it took (nil: none).
func (r *dirRing) add(n *node) *node {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.nodes) == 0 { // closed
		return n
	}
	old := r.nodes[r.next]
	r.nodes[r.next] = n
	r.next = (r.next + 1) % len(r.nodes)
	return old
}

// dirFD is a kept upper directory fd, shared by its node and the requests it lent it to;
// the last to let go closes it.
type dirFD struct {
	fd    int
	epoch uint64 // overlayFS.dirEpoch when the path was resolved
	refs  atomic.Int32
	done  func() // release, made once so that lending it allocates nothing
}

func newDirFD(fd int, epoch uint64, refs int32) *dirFD {
	d := &dirFD{fd: fd, epoch: epoch}
	d.refs.Store(refs)
	d.done = d.release
	return d
}

// borrow takes a reference unless the fd is already closed or closing.
func (d *dirFD) borrow() bool {
	for {
		r := d.refs.Load()
		if r <= 0 {
			return false
		}
		if d.refs.CompareAndSwap(r, r+1) {
			return true
		}
	}
}

func (d *dirFD) release() {
	if d.refs.Add(-1) == 0 {
		unix.Close(d.fd)
	}
}

// dirChanging tells the kept fds that an upper directory is about to be removed, replaced
// or moved: none opened before is lent again.
func (o *overlayFS) dirChanging() { o.dirEpoch.Add(1) }

// upperFD returns an fd of the upper copy of directory node n (which must have one) with
// its path, and the function to call when done with the fd.
func (n *node) upperFD() (int, string, func(), syscall.Errno) {
	o := n.ofs
	if fd, release, ok := n.lendUpper(); ok {
		rel, errno := n.rel()
		if errno != 0 {
			release()
			return -1, "", nil, errno
		}
		return fd, rel, release, 0
	}
	epoch := o.dirEpoch.Load()
	keep := o.dirOps.Load() == 0
	rel, errno := n.rel()
	if errno != 0 {
		return -1, "", nil, errno
	}
	fd, err := o.stack.OpenDir(layers.Upper, rel)
	if err != nil {
		return -1, "", nil, toErrno(err)
	}
	d := newDirFD(fd, epoch, 2)
	if keep && o.dirEpoch.Load() == epoch && n.ds.upDir.CompareAndSwap(nil, d) {
		if old := o.dirRing.add(n); old != nil && old != n {
			o.dirRing.drop(old)
		}
		return fd, rel, d.done, 0
	}
	d.refs.Store(1)
	return fd, rel, d.done, 0
}

// lendUpper lends n's kept upper fd, if it keeps one of the current epoch (a stale one
// is let go), with the function to call when done.
func (n *node) lendUpper() (int, func(), bool) {
	if n.ds == nil {
		return -1, nil, false
	}
	d := n.ds.upDir.Load()
	if d == nil {
		return -1, nil, false
	}
	if d.epoch == n.ofs.dirEpoch.Load() && d.borrow() {
		return d.fd, d.done, true
	}
	n.dropUpperFD(d)
	return -1, nil, false
}

// dropUpperFD lets go of the node's kept fd d (nil: whatever it keeps).
func (n *node) dropUpperFD(d *dirFD) {
	if n.ds == nil {
		return
	}
	if d == nil {
		d = n.ds.upDir.Load()
		if d == nil {
			return
		}
	}
	if n.ds.upDir.CompareAndSwap(d, nil) {
		d.release()
	}
}

// upperParent is parentDir for the upper layer.
func (n *node) upperParent(rel string) (int, string, func(), error) {
	if p := n.parentNode(); p != nil {
		dir, name := sysx.Split(rel)
		if fd, release, ok := p.lendUpper(); ok {
			if p.GetChild(name) == n.EmbeddedInode() {
				return fd, name, release, nil
			}
			release() // moved meanwhile: by the path
		} else if fd, prel, release, errno := p.upperFD(); errno == 0 {
			if dir == prel {
				return fd, name, release, nil
			}
			release()
		}
	}
	fd, name, err := n.ofs.stack.OpenParent(layers.Upper, rel)
	if err != nil {
		return -1, "", nil, err
	}
	return fd, name, func() { unix.Close(fd) }, nil
}

// dirFds is lookup.NewDirFds for directory node n at rel, with its upper copy's fd
// lent by n (OpenLayerDir).
func (n *node) dirFds(rel string) *lookup.DirFds {
	return lookup.NewDirFdsWith(n.ofs.stack, rel, n)
}

var _ lookup.Opener = (*node)(nil)

// OpenLayerDir opens n's copy in layer li (rel is n's path) for a lookup.DirFds: the
// upper one is n's kept fd, and so is a lower one if n keeps it (lowerfd.go).
func (n *node) OpenLayerDir(li int, rel string) (int, func(), error) {
	return n.openLayerDir(li, rel, false)
}

// openLayerDir is OpenLayerDir; keep makes n keep the lower fd it opens.
func (n *node) openLayerDir(li int, rel string, keep bool) (int, func(), error) {
	if n.ofs.stack.Lower(li) {
		if fd, release, ok := n.lendLower(li); ok {
			return fd, release, nil
		}
		fd, err := n.ofs.stack.OpenDir(li, rel)
		if err != nil || !keep {
			return fd, nil, err
		}
		return fd, n.keepLower(li, fd), nil
	}
	if li == layers.Upper && n.ofs.stack.Writable {
		if fd, release, ok := n.lendUpper(); ok {
			return fd, release, nil
		}
		fd, urel, release, errno := n.upperFD()
		if errno != 0 {
			return -1, nil, errno
		}
		if urel == rel {
			return fd, release, nil
		}
		release() // moved meanwhile: by the path
	}
	fd, err := n.ofs.stack.OpenDir(li, rel)
	return fd, nil, err
}

// parentDir returns an fd of the directory holding n's copy in layer li (rel is n's
// path), with n's name in it, and the function to call when done: the upper one
// through the parent node's kept fd.
func (n *node) parentDir(li int, rel string) (int, string, func(), error) {
	if li == layers.Upper && n.ofs.stack.Writable && rel != "" {
		return n.upperParent(rel)
	}
	fd, name, err := n.ofs.stack.OpenParent(li, rel)
	if err != nil {
		return -1, "", nil, err
	}
	return fd, name, func() { unix.Close(fd) }, nil
}
