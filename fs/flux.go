package fs

import (
	"context"
	"runtime"
	"syscall"
	"time"

	"github.com/cowfs/cowfs/internal/sysx"
	"golang.org/x/sys/unix"
)

// Names in flux. The daemon opens and stats an object through its path, which go-fuse's
// tree gives (rel). An UNLINK, RMDIR or RENAME changes the names on disk first, and
// go-fuse moves its nodes only after the request's handler returns, so for a moment a
// node's path leads to whatever the name holds now: the file renamed over it, or
// nothing. An OPEN then opened another file for this node (the kernel keeps this one's
// size: fstat and reads disagreed) or failed with ENOENT, though a rename over a name
// never leaves it empty (TestFstatDuringRenameOver).
//
// Each directory node counts the name changes in it (flux): the low 8 bits the changes
// in progress, the rest a sequence number. A change starts (before anything moves on
// disk) in the node's handler, and ends when go-fuse has moved its nodes: rawFS ends it
// after the bridge returns, through the request's cancel channel (a key unique among the
// requests in progress); a handler that fails ends it at once, as go-fuse then moves
// nothing. An open or stat by path that overlaps a change in the parent directory waits
// for the change to end and resolves the path again (settle).

const (
	fluxStart = 1<<8 | 1 // one more change in progress, next sequence number
	fluxEnd   = 1<<8 - 1 // one fewer in progress, next sequence number
	fluxBusy  = 1<<8 - 1 // the bits counting the changes in progress
)

// fluxRec is what a request changes: the directory nodes whose flux it started.
type fluxRec struct{ dirs []*node }

// startFlux records that a name in each of dirs is about to change. The handler calls
// the returned function when it returns: a change that failed (go-fuse moves nothing)
// or that is not a request's ends there; one that succeeded ends in rawFS (endFlux),
// after go-fuse has moved its nodes.
func (o *overlayFS) startFlux(ctx context.Context, dirs ...*node) (end func(failed bool)) {
	for _, d := range dirs {
		d.ds.flux.Add(fluxStart)
	}
	return func(failed bool) {
		key := ctx.Done()
		if failed || key == nil {
			endDirs(dirs)
			return
		}
		if old, loaded := o.flux.Swap(key, &fluxRec{dirs: dirs}); loaded {
			endDirs(old.(*fluxRec).dirs) // not expected: one change per request
		}
	}
}

// endFlux ends the changes the request with this cancel channel made (rawFS, once
// go-fuse has moved its nodes).
func (o *overlayFS) endFlux(cancel <-chan struct{}) {
	if v, ok := o.flux.LoadAndDelete(cancel); ok {
		endDirs(v.(*fluxRec).dirs)
	}
}

func endDirs(dirs []*node) {
	for _, d := range dirs {
		d.ds.flux.Add(fluxEnd)
	}
}

// settle runs try, which resolves n's path and opens or stats what it names, so that
// its result is n's object: it holds when no name in n's parent changed from before the
// path was resolved to after try. Otherwise, once the change ended (go-fuse moved its
// nodes), try runs again. A node that lost its name gets ESTALE, which makes the kernel
// resolve the path again (an open then opens what the name holds now). undo releases a
// result that is not used.
func settle[T any](n *node, try func() (T, syscall.Errno), undo func(T)) (T, syscall.Errno) {
	var v T
	var errno syscall.Errno
	var waited time.Duration
	for i := 0; ; i++ {
		p := n.parentNode()
		if p == nil {
			return try()
		}
		before := p.ds.flux.Load()
		if before&fluxBusy == 0 {
			v, errno = try()
			if p.ds.flux.Load() == before {
				return v, errno
			}
			if errno == 0 {
				undo(v)
			}
		}
		if waited >= settleWait {
			var zero T
			return zero, syscall.ESTALE
		}
		if i < 50 {
			runtime.Gosched()
		} else {
			time.Sleep(settleNap)
			waited += settleNap
		}
	}
}

// A change takes tens of microseconds, one with a copy-up or an fsync milliseconds.
// settle waits for one at most settleWait (then ESTALE has the kernel try again), so that
// a directory that changes without a pause (rm -rf in it) never holds an open forever.
const (
	settleWait = 2 * time.Second
	settleNap  = 50 * time.Microsecond
)

// Orphans. Kernel overlayfs opens an inode, not a name: an open that resolved a name
// before a file was renamed over it opens the replaced file. cowfs opens by path, and the
// replaced file has none. A RENAME over an upper regular file that the kernel knows (a
// node) keeps an O_PATH fd of it, and an open of the node that finds its name gone
// reopens the file through it (/proc/self/fd, which names the inode itself, so no layer
// path is resolved). The kernel forgets the node once nothing refers to it (nothing may
// open it after that); the fd is closed then (OnForget).

// keepOrphan keeps fd, an O_PATH fd of the file of n, which just lost its name.
func (o *overlayFS) keepOrphan(n *node, fd int) {
	if old, loaded := o.orphans.Swap(n, fd); loaded {
		unix.Close(old.(int))
	}
}

// openOrphan opens the file of n, which lost its name, with flags, if an fd was kept.
func (o *overlayFS) openOrphan(n *node, flags int) (int, bool) {
	v, ok := o.orphans.Load(n)
	if !ok {
		return -1, false
	}
	fd, err := unix.Open(sysx.ProcPath(v.(int), ""), flags&^unix.O_NOFOLLOW, 0)
	return fd, err == nil
}

// dropOrphan closes the fd kept for n (at FORGET).
func (o *overlayFS) dropOrphan(n *node) {
	if v, ok := o.orphans.LoadAndDelete(n); ok {
		unix.Close(v.(int))
	}
}
