package fs

import (
	"sync/atomic"

	"github.com/cowfs/cowfs/lookup"
)

// Lower directory fds, kept by their nodes.
//
// A LOOKUP stats the name in each layer's copy of the directory, and each copy was
// opened from its layer root (openat2, RESOLVE_BENEATH) and closed again for every
// name: with three lower layers, six of the fourteen system calls of a lookup. A
// copy-up opened the lower parent once more. So a directory node keeps the O_PATH fds
// of its lower copies that a LOOKUP or a copy-up opened, and lends them to the next.
//
// Unlike the upper fds (dirfd.go) they need no epoch: nothing changes a lower layer,
// and a directory with a lower copy never moves (rename answers EXDEV, as kernel
// overlayfs without redirect_dir) and neither do its ancestors, which have lower
// copies too; so the path a node had when an fd was opened is the path it has as long
// as it lives. A listing does not keep them: it opens each copy once for all its
// names, and a walk lists each directory once.
//
// The nodes that keep them are in a ring, like the upper fds, holding together at most
// as many fds as the upper ring; a node lets go of them when the kernel forgets it.

// lowerSet is one node's kept lower fds, by layer.
type lowerSet struct {
	fds []atomic.Pointer[dirFD]
	// closed: dropped from overlayFS.lowerDirs; an fd stored after is let go at once.
	closed atomic.Bool
}

func (s *lowerSet) close() {
	s.closed.Store(true)
	for i := range s.fds {
		if d := s.fds[i].Swap(nil); d != nil {
			d.release()
		}
	}
}

// keeper is a directory node as a lookup.Opener that keeps the lower fds it opens.
type keeper node

func (k *keeper) OpenLayerDir(li int, rel string) (int, func(), error) {
	return (*node)(k).openLayerDir(li, rel, true)
}

// keptDirFds is dirFds for a request that keeps the lower fds it opens: a LOOKUP, a
// copy-up, a removal.
func (n *node) keptDirFds(rel string) *lookup.DirFds {
	return lookup.NewDirFdsWith(n.ofs.stack, rel, (*keeper)(n))
}

// lendLower lends n's kept fd of its copy in lower layer li, if it keeps one.
func (n *node) lendLower(li int) (int, func(), bool) {
	v, ok := n.ofs.lowerDirs.Load(n)
	if !ok {
		return -1, nil, false
	}
	if d := v.(*lowerSet).fds[li].Load(); d != nil && d.borrow() {
		return d.fd, d.done, true
	}
	return -1, nil, false
}

// keepLower makes n keep fd, its copy in lower layer li, and returns the function that
// lets go of the caller's use of it.
func (n *node) keepLower(li, fd int) func() {
	o := n.ofs
	d := newDirFD(fd, 0, 2)
	v, ok := o.lowerDirs.Load(n)
	if !ok {
		s := &lowerSet{fds: make([]atomic.Pointer[dirFD], len(o.stack.Layers))}
		if v, ok = o.lowerDirs.LoadOrStore(n, s); !ok {
			if old := o.lowerRing.add(n); old != nil && old != n {
				o.dropLower(old)
			}
		}
	}
	s := v.(*lowerSet)
	if s.fds[li].CompareAndSwap(nil, d) {
		if s.closed.Load() && s.fds[li].CompareAndSwap(d, nil) {
			d.release() // dropped meanwhile: the caller's reference is the last
		}
		return d.done
	}
	d.refs.Store(1) // another request kept one first
	return d.done
}

// dropLower lets go of the lower fds n keeps.
func (o *overlayFS) dropLower(n *node) {
	if v, ok := o.lowerDirs.LoadAndDelete(n); ok {
		v.(*lowerSet).close()
	}
}
