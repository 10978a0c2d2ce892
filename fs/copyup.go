package fs

import (
	"syscall"

	"github.com/cowfs/cowfs/copyup"
	"github.com/cowfs/cowfs/internal/sysx"
	"github.com/cowfs/cowfs/layers"
	"github.com/cowfs/cowfs/lookup"
	"golang.org/x/sys/unix"
)

// copyKind says how much of an object a copy-up brings into the upper layer.
type copyKind int

const (
	// copyAll: everything, the data of a regular file included.
	copyAll copyKind = iota
	// copyNoData: everything but the data (the caller truncates the file to zero).
	copyNoData
	// copyMeta: the metadata only, where the mount makes metacopy files (metacopy=on,
	// a regular file); else everything. For chmod, chown, utimes and xattr changes.
	copyMeta
)

// copyUp brings n into the upper layer (parents first) unless it is there already, data
// included: a metacopy file gets its data. noData skips the file data (the caller is
// about to truncate it to zero). Concurrent callers cause one copy-up: the second waits
// on the copy-up lock (lockCopy) and finds the work done.
func (n *node) copyUp(noData bool) syscall.Errno {
	kind := copyAll
	if noData {
		kind = copyNoData
	}
	return n.copyUpNotify(kind, true)
}

// copyUpMeta brings n's metadata into the upper layer: only the metadata of a regular
// file on a metacopy=on mount (kernel ovl_copy_up_flags without O_WRONLY), else all.
func (n *node) copyUpMeta() syscall.Errno {
	return n.copyUpNotify(copyMeta, true)
}

// copyUpInDirOp is copyUp for requests during which the kernel holds the directory's
// lock (link, rename): the kernel is told of a renumbered name only after the reply.
// The data comes up too: cowfs has no redirects, so a metacopy file must keep its name
// to find its data below; a link or rename copies it up whole first.
func (n *node) copyUpInDirOp() syscall.Errno {
	return n.copyUpNotify(copyAll, false)
}

// upToDate reports whether n's upper copy has what a copy-up of kind needs.
func (n *node) upToDate(kind copyKind) bool {
	return n.isUpper() && (kind == copyMeta || !n.isMetacopy())
}

func (n *node) copyUpNotify(kind copyKind, notifyNow bool) syscall.Errno {
	if !n.ofs.stack.Writable {
		return syscall.EROFS
	}
	if n.upToDate(kind) {
		return 0
	}
	// Parents first, through the nodes, so every ancestor node learns it is upper now.
	// Taken before our own copy-up lock: the lock order is parent before child.
	p := n.parentNode()
	if p == nil {
		return syscall.ENOENT
	}
	if errno := p.copyUp(false); errno != 0 {
		return errno
	}
	defer n.ofs.lockCopy(n)()
	if n.upToDate(kind) {
		return 0
	}
	rel, errno := n.rel()
	if errno != 0 {
		return errno
	}
	ls := n.getLayers()
	// The parent's kept fds, if the parent is still the directory of rel.
	var dirs lookup.Opener
	if n.parentNode() == p {
		dirs = (*keeper)(p)
	}
	switch {
	case n.IsDir():
		// Not up yet, so the topmost copy is a lower one: the attributes come from it,
		// and the number it shows, which the upper copy keeps, is its.
		src := copyup.Source{Layer: ls[0], Rel: rel, Ino: n.StableAttr().Ino, Dirs: dirs}
		if err := n.ofs.cp.Dir(src); err != nil {
			return toErrno(err)
		}
		n.setLayers(append([]int{layers.Upper}, ls...))
		if len(ls) == 1 {
			// A lower-only directory became a merged one, whose nlink shows as 1
			// (fixAttr): the kernel must not go on with the attributes it cached.
			n.NotifyContent(-1, 0)
		}
	case ls[0] == layers.Upper:
		// A metacopy file that needs its data now. Same file, same number: only
		// where reads go changes (handle.readFd moves open files over).
		if err := n.ofs.cp.Data(rel, ls[len(ls)-1], kind == copyNoData); err != nil {
			return toErrno(err)
		}
		n.setLayers([]int{layers.Upper})
	default:
		// The copy keeps the number it showed; not the copy of one name of a lower hard
		// link, which becomes a file of its own and gets a number of its own (as in
		// kernel ovl_getattr): sharing the number with the other names would make tar
		// and rsync -H take them for links of one file.
		src := copyup.Source{Layer: ls[0], Rel: rel, NoData: kind == copyNoData, Dirs: dirs}
		if len(ls) > 1 {
			src.DataLayer = ls[len(ls)-1] // a lower metacopy file
		}
		src.Meta = kind == copyMeta && n.StableAttr().Mode&unix.S_IFMT == unix.S_IFREG && n.ofs.cp.Metacopy()
		multi := n.StableAttr().Gen != 0
		if !multi {
			src.Ino = n.StableAttr().Ino
		}
		if err := n.ofs.cp.File(src); err != nil {
			return toErrno(err)
		}
		if src.Meta {
			n.setLayers([]int{layers.Upper, ls[len(ls)-1]})
		} else {
			n.setLayers([]int{layers.Upper})
		}
		if multi {
			// A live node cannot change its number: have the kernel look the name up
			// afresh, which makes a new node. This node stays for the files already
			// open on it, and rel() no longer gives it the name. The kernel takes the
			// directory's lock for that, so not while it holds it.
			_, name := sysx.Split(rel)
			n.mu.Lock()
			n.superseded = true // Open and Getattr send the kernel to the new node
			n.mu.Unlock()
			// The attributes the kernel holds for this node (the lower file's nlink)
			// are no longer right; it asks again (see Getattr) after this.
			n.NotifyContent(-1, 0)
			if notifyNow {
				p.NotifyEntry(name)
			} else {
				go p.NotifyEntry(name)
			}
		}
	}
	p.changed()
	return 0
}

// lockCopy serialises the copy-ups of n, and returns the function that ends n's. A
// copy-up is rare next to the nodes a walk makes, so the lock is an entry in a map for
// its duration rather than a mutex in every node.
func (o *overlayFS) lockCopy(n *node) (unlock func()) {
	for {
		o.copyingMu.Lock()
		busy, ok := o.copying[n]
		if !ok {
			done := make(chan struct{})
			o.copying[n] = done
			o.copyingMu.Unlock()
			return func() {
				o.copyingMu.Lock()
				delete(o.copying, n)
				o.copyingMu.Unlock()
				close(done)
			}
		}
		o.copyingMu.Unlock()
		<-busy
	}
}

// upperDir copies directory node n up if needed and returns an fd of its upper copy
// (kept by n, dirfd.go), its path, and the function to call when done with the fd.
func (n *node) upperDir() (int, string, func(), syscall.Errno) {
	if errno := n.copyUp(false); errno != 0 {
		return -1, "", nil, errno
	}
	return n.upperFD()
}
