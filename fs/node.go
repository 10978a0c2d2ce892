package fs

import (
	"context"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/cowfs/cowfs/internal/sysx"
	"github.com/cowfs/cowfs/layers"
	"github.com/cowfs/cowfs/lookup"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// node is one object of the merged tree. Its path relative to the layer roots is derived
// from the go-fuse tree (parent, name), never stored.
//
// Lock order: a node's copy-up lock (lockCopy) before any node's mu; a parent's copy-up
// lock before a child's (copy-up brings parents up first). go-fuse's own tree locks are
// never held while a node lock is taken here.
//
// The daemon keeps a node for every name the kernel knows, so its size is most of the
// daemon's memory after a walk: fields only directories need are in dirState, those
// that rarely have a value are in maps of overlayFS (lockCopy, anonFds), and the layer
// lists are shared (internLayers). TestNodeSize keeps it in the 256-byte class.
type node struct {
	gofs.Inode
	ofs *overlayFS

	// mu guards layers, xattrs, last and the fields from xattrGen to freshDir.
	mu sync.Mutex
	// last is the attributes last reported (see shortStat.valid): what fstat shows once
	// the name is gone and no open file of ours can answer (a fifo or a device is opened
	// by the kernel alone).
	last shortStat
	// layers are the layers holding the object, topmost first (see lookup.Entry.Layers).
	// Interned (internLayers): replaced, never changed in place.
	layers *[]int
	// xattrs caches the topmost copy's attributes (nil: not loaded). Only the daemon
	// changes the layers, so it stays right until the daemon sets or removes one or
	// copies the object up. FUSE caches only ACLs: the kernel asks for each object's ACL
	// once, `ls -l` for the label (xattr.go), a write or chown for security.capability.
	xattrs map[string][]byte
	// ds is a directory's state (nil for anything else); set before the node is
	// published, never changed.
	ds *dirState

	// xattrGen counts the drops of xattrs, so a read that raced with a change is not kept.
	xattrGen uint32
	// cachedOpen counts the open files of this node that are not passed through (see
	// handle.passthrough and admit in file.go).
	cachedOpen int32
	// opens counts all its open files (admitted handles not yet released): an UNLINK
	// defers the unlink only of a file with none (reap.go).
	opens int32
	// anon marks a file made with O_TMPFILE that has no name yet; its fd, so it can be
	// linked into place, is in overlayFS.anonFds.
	anon bool
	// data holds what the data path did with the node (file.go), as bits:
	// dataLowerBacked, a lower file was passed through for it, so its upper copy is
	// opened through a new node (admit); dataFilled, fillCache stored its lower data
	// in the kernel's page cache, or found it need not (it does so once).
	data uint8
	// superseded: a new node took this one's place, or will at the name's next lookup:
	// repoint (passthrough.go), or a copy-up that gave a lower hard link a number of
	// its own (copyUpNotify).
	superseded bool
	// freshDir: last holds the attributes of a directory that only lower layers hold,
	// as the daemon's last listing of it left them (listed). Nothing else changes them
	// while it is mounted (lower layers are read O_NOATIME; where that is refused, a
	// listing moves the atime, hence the fstat after each), so they answer a GETATTR
	// without a stat (freshDirAttr); a change of layers clears it.
	freshDir bool
}

// dirState is what only a directory node has. All atomic, no lock.
type dirState struct {
	// gen names the directory's current generation in the lookup cache and the
	// listings: a number of the mount's sequence (overlayFS.nextGen), never given to
	// another directory or generation, replaced after every change of a name in it.
	gen atomic.Uint64
	// flux counts the name changes in the directory (flux.go).
	flux atomic.Uint32
	// upDir is the upper copy's fd, once kept (dirfd.go).
	upDir atomic.Pointer[dirFD]
}

// newDirState starts a directory's state at a new generation.
func (o *overlayFS) newDirState() *dirState {
	d := new(dirState)
	d.gen.Store(o.nextGen.Add(1))
	return d
}

// gen is directory n's generation (0 for anything else).
func (n *node) gen() uint64 {
	if n.ds == nil {
		return 0
	}
	return n.ds.gen.Load()
}

func (n *node) getLayers() []int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return *n.layers
}

func (n *node) top() int { return n.getLayers()[0] }

func (n *node) isUpper() bool {
	return n.ofs.stack.Writable && n.top() == layers.Upper
}

// isMetacopy reports whether n is a metacopy file: its attributes in layers[0], its
// data in the last layer (lookup.Entry.Metacopy).
func (n *node) isMetacopy() bool {
	return !n.IsDir() && len(n.getLayers()) > 1
}

// dataLayer is the layer holding n's data: the topmost but for a metacopy file.
func (n *node) dataLayer() int {
	ls := n.getLayers()
	if n.IsDir() {
		return ls[0]
	}
	return ls[len(ls)-1]
}

// merge takes the location found by a fresh lookup. Objects only ever move up (copy-up),
// so a lookup that raced with a copy-up and saw the old place must not move it back.
func (n *node) merge(ls []int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.layers == nil || ls[0] < (*n.layers)[0] {
		n.layers = n.ofs.internLayers(ls)
		n.xattrs = nil
		n.xattrGen++
		n.freshDir = false
	}
}

func (n *node) setLayers(ls []int) {
	il := n.ofs.internLayers(ls)
	n.mu.Lock()
	n.layers = il
	n.xattrs = nil
	n.xattrGen++
	n.freshDir = false
	n.mu.Unlock()
}

// rel is the node's path relative to the layer roots; ENOENT when it was removed.
func (n *node) rel() (string, syscall.Errno) {
	// Names from the node up, in an array on the stack for the usual depths: rel runs
	// several times a request, and growing a slice and copying the joined bytes into a
	// string were 7 of the 54 MB a chmod of 5,000 lower files allocated.
	var stack [16]string
	parts := stack[:0]
	var cur *gofs.Inode = n.EmbeddedInode()
	root := n.ofs.root.EmbeddedInode()
	for cur != root {
		name, parent := cur.Parent()
		// go-fuse keeps a node's parent record when a newer lookup put another node at
		// the name (after the daemon invalidated it): that node no longer owns the path.
		if parent == nil || parent.GetChild(name) != cur {
			if cur == n.EmbeddedInode() && n.repointed() {
				// A new node took the name (admit); another name of the object may
				// still lead here. ESTALE makes the kernel look the path up afresh
				// (retry_estale), which finds the new node.
				return "", syscall.ESTALE
			}
			return "", syscall.ENOENT
		}
		parts = append(parts, name)
		cur = parent
	}
	if len(parts) == 0 {
		return "", 0
	}
	size := len(parts) - 1
	for _, p := range parts {
		size += len(p)
	}
	b := make([]byte, size)
	end := size
	for i, p := range parts { // the last name first
		end -= len(p)
		copy(b[end:], p)
		if i < len(parts)-1 {
			end--
			b[end] = '/'
		}
	}
	return unsafe.String(&b[0], len(b)), 0 // b is not used again
}

func (n *node) parentNode() *node {
	_, p := n.Parent()
	if p == nil {
		return nil
	}
	pn, _ := p.Operations().(*node)
	return pn
}

func (n *node) dir(rel string) lookup.Dir {
	return lookup.Dir{Gen: n.gen(), Rel: rel, Layers: n.getLayers()}
}

// changed records that a name in directory n changed (after the change is on disk): a
// new generation. Concurrent changes may store their numbers in either order; what
// matters is that a generation, once replaced, never comes back.
func (n *node) changed() {
	if n.ds != nil {
		n.ds.gen.Store(n.ofs.nextGen.Add(1))
	}
}

// stat reads the attributes of the object in its topmost layer, and keeps them.
func (n *node) stat(rel string) (unix.Stat_t, syscall.Errno) {
	st, errno := n.look(rel)
	if errno == 0 {
		n.remember(&st)
	}
	return st, errno
}

// look reads the attributes of the object in its topmost layer.
func (n *node) look(rel string) (unix.Stat_t, syscall.Errno) {
	ls := n.getLayers()
	st, err := n.statIn(ls[0], rel)
	if err != nil {
		return st, toErrno(err)
	}
	if m := n.StableAttr().Mode & unix.S_IFMT; m != 0 && st.Mode&unix.S_IFMT != m {
		// Another object took the name after rel was built (a rename over it): its
		// attributes are not n's. ESTALE makes the kernel look the name up again.
		return st, syscall.ESTALE
	}
	n.ofs.fixAttr(&st, ls)
	n.ofs.metacopyBlocks(&st, ls, rel)
	return st, 0
}

// shortStat keeps the fields of a unix.Stat_t that the kernel is shown (those that
// fuse.Attr.FromStat reads, at the widths it stores them), in 72 bytes rather than 144:
// it is in every node. Times are kept as nanoseconds since the epoch, which covers the
// years 1678 to 2262; attributes with a time outside them are not kept (set reports
// false), and a node then does without (the callers of lastAttr and freshDirAttr stat
// the object or give up as when nothing was reported yet).
type shortStat struct {
	ino, size, blocks   uint64
	atime, mtime, ctime int64 // nanoseconds since the epoch
	mode, nlink         uint32
	uid, gid            uint32
	rdev, blksize       uint32
}

// valid reports whether s holds attributes (an object's number is never 0).
func (s *shortStat) valid() bool { return s.ino != 0 }

// set keeps st, or clears s and reports false when a time does not fit.
func (s *shortStat) set(st *unix.Stat_t) bool {
	a, okA := nsOf(st.Atim)
	m, okM := nsOf(st.Mtim)
	c, okC := nsOf(st.Ctim)
	if !okA || !okM || !okC {
		*s = shortStat{}
		return false
	}
	*s = shortStat{
		ino: st.Ino, size: uint64(st.Size), blocks: uint64(st.Blocks),
		atime: a, mtime: m, ctime: c,
		mode: st.Mode, nlink: uint32(st.Nlink), uid: st.Uid, gid: st.Gid,
		rdev: uint32(st.Rdev), blksize: uint32(st.Blksize),
	}
	return true
}

// nsOf is t in nanoseconds since the epoch, if that fits in an int64.
func nsOf(t unix.Timespec) (int64, bool) {
	const limit = math.MaxInt64 / 1_000_000_000 // whole seconds that fit, either way
	if t.Sec >= limit || t.Sec <= -limit || t.Nsec < 0 || t.Nsec >= 1e9 {
		return 0, false
	}
	return t.Sec*1e9 + t.Nsec, true
}

// timespecOf is the inverse of nsOf.
func timespecOf(ns int64) unix.Timespec {
	sec, nsec := ns/1e9, ns%1e9
	if nsec < 0 {
		sec, nsec = sec-1, nsec+1e9
	}
	return unix.Timespec{Sec: sec, Nsec: nsec}
}

func (s *shortStat) stat() unix.Stat_t {
	return unix.Stat_t{
		Ino: s.ino, Size: int64(s.size), Blocks: int64(s.blocks),
		Atim: timespecOf(s.atime), Mtim: timespecOf(s.mtime), Ctim: timespecOf(s.ctime),
		Mode: s.mode, Nlink: uint64(s.nlink), Uid: s.uid, Gid: s.gid,
		Rdev: uint64(s.rdev), Blksize: int64(s.blksize),
	}
}

func (n *node) remember(st *unix.Stat_t) {
	n.mu.Lock()
	n.last.set(st)
	n.mu.Unlock()
}

// listed keeps st, the attributes of directory n's topmost copy, in a lower layer, as a
// listing of the layers ls left them (mergedEntries), unless n's layers changed since.
func (n *node) listed(st *unix.Stat_t, ls []int) {
	n.ofs.fixAttr(st, ls)
	n.mu.Lock()
	if slices.Equal(*n.layers, ls) && n.last.set(st) {
		n.freshDir = true
	}
	n.mu.Unlock()
}

// freshDirAttr is what listed kept, while n is still a directory of lower layers only.
func (n *node) freshDirAttr() (unix.Stat_t, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.freshDir || !n.ofs.stack.Lower((*n.layers)[0]) {
		return unix.Stat_t{}, false
	}
	return n.last.stat(), true
}

// isOpen reports whether a file of ours is open on n.
func (n *node) isOpen() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.opens > 0
}

// unlinked records that one name of the node was removed.
func (n *node) unlinked() {
	n.mu.Lock()
	if n.last.nlink > 0 {
		n.last.nlink--
	}
	n.mu.Unlock()
}

// lastAttr is what remember kept, if anything (only the fields the kernel is shown).
func (n *node) lastAttr() (unix.Stat_t, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.last.stat(), n.last.valid()
}

// statIn lstat()s n's copy in layer li (rel is n's path).
func (n *node) statIn(li int, rel string) (unix.Stat_t, error) {
	dirfd, name, release, err := n.parentDir(li, rel)
	if err != nil {
		return unix.Stat_t{}, err
	}
	defer release()
	return n.ofs.statAt(li, dirfd, name)
}

// statIn lstat()s rel in layer li.
func (o *overlayFS) statIn(li int, rel string) (unix.Stat_t, error) {
	dirfd, name, err := o.stack.OpenParent(li, rel)
	if err != nil {
		return unix.Stat_t{}, err
	}
	defer unix.Close(dirfd)
	return o.statAt(li, dirfd, name)
}

// statAt lstat()s name in dirfd, layer li's copy of its directory ("": dirfd itself).
func (o *overlayFS) statAt(li, dirfd int, name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	var err error
	if name == "" {
		err = unix.Fstat(dirfd, &st)
	} else {
		err = unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err == nil {
		o.stack.ApplyOverride(li, dirfd, name, &st) // xattr_permissions
	}
	return st, err
}

// fixAttr adjusts real attributes to the merged view: a merged directory has nlink 1
// (kernel ovl_getattr: counting subdirectories across layers is not worth it).
func (o *overlayFS) fixAttr(st *unix.Stat_t, ls []int) {
	if st.Mode&unix.S_IFMT == unix.S_IFDIR && len(ls) > 1 {
		st.Nlink = 1
	}
}

// metacopyBlocks shows a metacopy file's st_blocks as its data's, which the upper copy
// does not hold (kernel ovl_getattr), so du counts what reads will bring.
func (o *overlayFS) metacopyBlocks(st *unix.Stat_t, ls []int, rel string) {
	if st.Mode&unix.S_IFMT != unix.S_IFREG || len(ls) < 2 {
		return
	}
	if d, err := o.statIn(ls[len(ls)-1], rel); err == nil {
		st.Blocks = d.Blocks
	}
}

// newChild makes (or finds) the node for a looked-up entry.
func (n *node) newChild(ctx context.Context, e lookup.Entry) *gofs.Inode {
	child := &node{ofs: n.ofs, layers: n.ofs.internLayers(e.Layers)}
	if e.Mode == unix.S_IFDIR {
		child.ds = n.ofs.newDirState()
	} else {
		e.Gen = n.ofs.regenOf(e.Ino, e.Gen)
	}
	in := n.NewInode(ctx, child, gofs.StableAttr{Mode: e.Mode, Ino: e.Ino, Gen: e.Gen})
	if got, ok := in.Operations().(*node); ok && got != child {
		got.merge(e.Layers)
	}
	return in
}

func (o *overlayFS) fillEntry(out *fuse.EntryOut, st *unix.Stat_t) {
	v := o.view(st)
	out.Attr.FromStat(&v)
}

func (o *overlayFS) fillAttr(out *fuse.AttrOut, st *unix.Stat_t) {
	v := o.view(st)
	out.Attr.FromStat(&v)
}

// view turns a layer's attributes into the merged view's: owners through the ID maps
// or squashed (fuse-overlayfs's uidmapping=, squash_to_*), directories with nlink 1
// under static_nlink. By value: a pointer made it a heap allocation per reply.
func (o *overlayFS) view(st *unix.Stat_t) syscall.Stat_t {
	out := toSyscallStat(st)
	opts := &o.stack.Opts
	out.Uid, out.Gid = opts.UIDMap.ToView(out.Uid), opts.GIDMap.ToView(out.Gid)
	if opts.SquashToRoot {
		out.Uid, out.Gid = 0, 0
	}
	if opts.SquashUID != nil {
		out.Uid = *opts.SquashUID
	}
	if opts.SquashGID != nil {
		out.Gid = *opts.SquashGID
	}
	if opts.StaticNlink && out.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		out.Nlink = 1
	}
	return out
}

// diskOwner is how a view owner is stored (-1, "unchanged", stays -1).
func (o *overlayFS) diskOwner(uid, gid int) (int, int) {
	opts := &o.stack.Opts
	if uid >= 0 {
		uid = int(opts.UIDMap.ToDisk(uint32(uid)))
	}
	if gid >= 0 {
		gid = int(opts.GIDMap.ToDisk(uint32(gid)))
	}
	return uid, gid
}

func toSyscallStat(st *unix.Stat_t) syscall.Stat_t {
	return syscall.Stat_t{
		Dev: st.Dev, Ino: st.Ino, Nlink: st.Nlink, Mode: st.Mode, Uid: st.Uid, Gid: st.Gid,
		Rdev: st.Rdev, Size: st.Size, Blksize: st.Blksize, Blocks: st.Blocks,
		Atim: syscall.Timespec(st.Atim), Mtim: syscall.Timespec(st.Mtim), Ctim: syscall.Timespec(st.Ctim),
	}
}

var _ = (gofs.NodeLookuper)((*node)(nil))

// Lookup resolves a name through the layers (lookup/).
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	rel, errno := n.rel()
	if errno != 0 {
		return nil, errno
	}
	fds := n.keptDirFds(rel)
	defer fds.Close()
	return n.lookupIn(ctx, fds, rel, name, -1, out)
}

// knownDir is the entry of name in n when the name holds a directory whose node the
// kernel still has: it asks again for a name it holds when it revalidates it with
// LOOKUP_EXCL (mkdir -p, tar -x making every file's parents) or LOOKUP_REVAL. Only the
// daemon changes the layers the node records (lower layers never change, and every
// change of the name through the mount updates go-fuse's tree and the node), so they
// answer without a walk of the layers, as the lookup cache would (and it may not have
// the name yet: lookup.Cache.set). Not for other objects: a file's node can be left
// for a new one at its name (superseded).
func (n *node) knownDir(name string) (lookup.Entry, *gofs.Inode) {
	c := n.GetChild(name)
	if c == nil || !c.IsDir() {
		return lookup.Entry{}, nil
	}
	cn, ok := c.Operations().(*node)
	if !ok || cn.ds == nil {
		return lookup.Entry{}, nil
	}
	sa := c.StableAttr()
	return lookup.Entry{Layers: cn.getLayers(), Mode: unix.S_IFDIR, Ino: sa.Ino, Gen: sa.Gen}, c
}

// lookupIn resolves name in n (at rel, whose layer fds are fds) and fills out. listedFrom
// is -1 for a LOOKUP; for an entry of a READDIRPLUS, the layer the listing found it in
// (lookup.Resolver.LookupListed).
func (n *node) lookupIn(ctx context.Context, fds *lookup.DirFds, rel, name string, listedFrom int, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	var e lookup.Entry
	var err error
	var known *gofs.Inode
	if listedFrom >= 0 {
		e, err = n.ofs.res.LookupListed(fds, n.dir(rel), name, listedFrom)
	} else if e, known = n.knownDir(name); known == nil {
		e, err = n.ofs.res.LookupIn(fds, n.dir(rel), name)
	}
	if err != nil {
		return nil, toErrno(err)
	}
	var st unix.Stat_t
	if e.Stat != nil {
		st = *e.Stat // the walk just read it
	} else if st, err = fds.Stat(e.Layers[0], name); err != nil {
		return nil, toErrno(err)
	}
	if dirfd, err := fds.Get(e.Layers[0]); err == nil {
		n.ofs.stack.ApplyOverride(e.Layers[0], dirfd, name, &st) // xattr_permissions, as statIn
	}
	crel := sysx.Join(rel, name)
	n.ofs.fixAttr(&st, e.Layers)
	n.ofs.metacopyBlocks(&st, e.Layers, crel)
	n.ofs.fillEntry(out, &st)
	child := known
	if child == nil {
		child = n.newChild(ctx, e)
	}
	if cn, ok := child.Operations().(*node); ok {
		cn.remember(&st)
		// Not for directories: tar -xf looks every existing directory up again before
		// its mkdir, and nothing asks for their attributes then (8,787 listxattr
		// calls for 2,000 files and 2,407 directories instead of 2,025).
		if dirfd, err := fds.Get(e.Layers[0]); err == nil && e.Mode != unix.S_IFDIR && cn.top() == e.Layers[0] {
			cn.preloadXattrs(dirfd, name)
		}
	}
	return child, 0
}

var _ = (gofs.NodeGetattrer)((*node)(nil))

// Getattr reports the topmost layer's attributes (through the open file when the name is gone).
func (n *node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if n.repointed() {
		if f == nil {
			// Asked for a name (stat), not for an open file of this node (go-fuse
			// passes any open file along): ESTALE makes the kernel look the name up
			// afresh (retry_estale), which finds the new node and its number. Until
			// then the kernel may still map the name here, for a moment after a LINK
			// or RENAME, whose copy-up tells it only after the reply (copyUpInDirOp).
			return syscall.ESTALE
		}
		// Files open on this node show the file that a new node writes (admit):
		// their attributes must not be kept.
		defer out.SetTimeout(time.Nanosecond)
	}
	if n.IsDir() {
		// Asked again after every listing, which drops the kernel's atime (see freshDir).
		if st, ok := n.freshDirAttr(); ok {
			n.ofs.fillAttr(out, &st)
			return 0
		}
	} else if h, ok := f.(*handle); ok {
		// An open file (fstat, or the kernel refreshing a size): its fd is the object
		// itself. A stat by path would race with a rename over the name, and give
		// another file's attributes, which the kernel would keep for this one.
		if st, errno := h.stat(); errno == 0 {
			if _, parent := n.Parent(); parent == nil {
				// Removed: as below, not cached.
				out.SetTimeout(time.Nanosecond)
			}
			n.remember(&st)
			n.ofs.fillAttr(out, &st)
			return 0
		}
	}
	st, errno := settle(n, func() (unix.Stat_t, syscall.Errno) {
		rel, errno := n.rel()
		if errno != 0 {
			return unix.Stat_t{}, errno
		}
		return n.look(rel)
	}, func(unix.Stat_t) {})
	if errno == 0 {
		n.remember(&st)
	}
	if errno != 0 {
		// Removed (or replaced at its name since rel, see stat), but still open:
		// answer from the open file or directory.
		switch h := f.(type) {
		case *handle:
			// Not cached: with the writeback cache nothing else makes the kernel ask
			// again, and the file may change through the name's new node (copy-up).
			defer out.SetTimeout(time.Nanosecond)
			return h.Getattr(ctx, out)
		case *dirHandle:
			st, err := h.fstat()
			if err != nil {
				return toErrno(err)
			}
			n.ofs.fillAttr(out, &st)
			return 0
		}
		if errno == syscall.ESTALE {
			return errno // repointed or replaced: see rel and stat
		}
		if st, ok := n.lastAttr(); ok {
			n.ofs.fillAttr(out, &st)
			return 0
		}
		return errno
	}
	n.ofs.fillAttr(out, &st)
	return 0
}

var _ = (gofs.NodeReadlinker)((*node)(nil))

// Readlink reads the symlink in its topmost layer.
func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	rel, errno := n.rel()
	if errno != 0 {
		return nil, errno
	}
	dirfd, name, release, err := n.parentDir(n.top(), rel)
	if err != nil {
		return nil, toErrno(err)
	}
	defer release()
	// Most targets are short; the buffer goes to the reply, one per call.
	buf := make([]byte, 256)
	for {
		k, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return nil, toErrno(err)
		}
		if k < len(buf) {
			return buf[:k], 0
		}
		buf = make([]byte, 2*len(buf))
	}
}

var _ = (gofs.NodeStatfser)((*node)(nil))

// Statfs reports the upper layer's filesystem (the topmost lower's when read-only).
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var st unix.Statfs_t
	if err := unix.Fstatfs(n.ofs.stack.Layers[0].Root, &st); err != nil {
		return toErrno(err)
	}
	out.Blocks = st.Blocks
	out.Bfree = st.Bfree
	out.Bavail = st.Bavail
	out.Files = st.Files
	out.Ffree = st.Ffree
	out.Bsize = uint32(st.Bsize)
	out.NameLen = uint32(st.Namelen)
	out.Frsize = uint32(st.Frsize)
	return 0
}
