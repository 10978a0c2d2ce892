package fs

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"hash/fnv"
	"slices"
	"sync"
	"syscall"

	"github.com/cowfs/cowfs/internal/sysx"
	"github.com/cowfs/cowfs/layers"
	"github.com/cowfs/cowfs/lookup"
	"github.com/cowfs/cowfs/whiteout"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// mergedEntries lists the directory rel, merged over its layers (top-down): whiteouts and
// the names they hide are dropped, the first occurrence of a name wins, and markers never
// show. "." and ".." are not included. If top is not nil and the topmost copy is in a
// lower layer, *top gets that copy's attributes as the listing left them (reading may
// move its atime) and fresh reports it.
func (o *overlayFS) mergedEntries(rel string, dirLayers []int, top *unix.Stat_t) (_ []fuse.DirEntry, fresh bool, _ error) {
	ents, _, fresh, err := o.mergedEntriesFrom(rel, dirLayers, top)
	return ents, fresh, err
}

// mergedEntriesFrom is mergedEntries that also tells, for each entry, the layer it was
// found in (lookup.Resolver.LookupListed).
func (o *overlayFS) mergedEntriesFrom(rel string, dirLayers []int, top *unix.Stat_t) (_ []fuse.DirEntry, from []int16, fresh bool, _ error) {
	var out []fuse.DirEntry
	seen := map[string]int{} // name -> index in out, or -1 for a hidden name
	inoFixed := map[int]bool{}
	for _, li := range dirLayers {
		var fd int
		var err error
		if o.stack.Lower(li) {
			fd, err = sysx.OpenBeneathNoatime(o.stack.Layers[li].Root, rel, unix.O_RDONLY|unix.O_DIRECTORY)
		} else {
			fd, err = sysx.OpenBeneath(o.stack.Layers[li].Root, rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		}
		if err != nil {
			if sysx.IsNotExist(err) {
				continue
			}
			return nil, nil, false, err
		}
		// Only whether the kernel's xattr whiteouts are in use here: whether the copy
		// is opaque was settled when dirLayers were (lookup.Resolver).
		marks, _ := whiteout.ReadDirXattrMarks(fd, "")
		err = readDirents(fd, func(name string, ino uint64, typ uint8) {
			if name == "." || name == ".." || name == whiteout.OpaqueName {
				return
			}
			if target, ok := whiteout.Target(name); ok {
				if _, dup := seen[target]; !dup {
					seen[target] = -1
				}
				return
			}
			if i, dup := seen[name]; dup {
				// A merged subdirectory shows its topmost lower copy's number.
				if i >= 0 && typ == unix.DT_DIR && out[i].Mode == unix.S_IFDIR && !inoFixed[i] && !o.stack.Lower(dirLayers[0]) {
					out[i].Ino = lookup.MapIno(o.stack, li, ino)
					inoFixed[i] = true
				}
				return
			}
			mode := dtToMode(typ)
			if mode == 0 || mode == unix.S_IFCHR || (mode == unix.S_IFREG && marks.XattrWhiteouts) {
				var st unix.Stat_t
				if unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
					return
				}
				mode = st.Mode & unix.S_IFMT
				if whiteout.IsCharWhiteout(&st) ||
					(mode == unix.S_IFREG && marks.XattrWhiteouts && st.Size == 0 && whiteout.IsXattrWhiteout(fd, name)) {
					seen[name] = -1
					return
				}
			}
			dino := lookup.MapIno(o.stack, li, ino)
			if !o.stack.Lower(li) && mode != unix.S_IFDIR {
				if orig, _, ok := lookup.ReadOrigin(o.stack, fd, name); ok {
					dino = orig
				}
			}
			seen[name] = len(out)
			out = append(out, fuse.DirEntry{Name: name, Mode: mode, Ino: dino})
			from = append(from, int16(li))
		})
		if err == nil && top != nil && li == dirLayers[0] && o.stack.Lower(li) {
			*top, err = o.statAt(li, fd, "")
			fresh = err == nil
		}
		unix.Close(fd)
		if err != nil {
			return nil, nil, false, err
		}
	}
	return out, from, fresh, nil
}

func dtToMode(t uint8) uint32 {
	switch t {
	case unix.DT_REG:
		return unix.S_IFREG
	case unix.DT_DIR:
		return unix.S_IFDIR
	case unix.DT_LNK:
		return unix.S_IFLNK
	case unix.DT_CHR:
		return unix.S_IFCHR
	case unix.DT_BLK:
		return unix.S_IFBLK
	case unix.DT_FIFO:
		return unix.S_IFIFO
	case unix.DT_SOCK:
		return unix.S_IFSOCK
	}
	return 0
}

// direntBufs are spare getdents buffers: 32 KiB allocated and zeroed for every directory
// read was a visible part of a cold walk's CPU. A few, not a sync.Pool: a request's
// goroutine often ends on another P than it began on, so a pool's per-P lists filled
// on some Ps while others allocated, and held about 100 buffers (3 MB of the 42 MB live
// heap after the benchmark walk, doubled in the peak by Go's heap goal) until a GC.
var direntBufs = make(chan []byte, 8)

func getDirentBuf() []byte {
	select {
	case b := <-direntBufs:
		return b
	default:
		return make([]byte, 32<<10)
	}
}

func putDirentBuf(b []byte) {
	select {
	case direntBufs <- b:
	default: // enough spares
	}
}

// readDirents calls fn for each entry of the directory fd, with its inode number and type.
func readDirents(fd int, fn func(name string, ino uint64, typ uint8)) error {
	buf := getDirentBuf()
	defer putDirentBuf(buf)
	for {
		k, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if k <= 0 {
			return nil
		}
		// linux_dirent64: d_ino u64, d_off s64, d_reclen u16, d_type u8, d_name. Read
		// by offset: a *unix.Dirent over the last record would reach past the buffer.
		for off := 0; off+19 <= k; {
			reclen := int(binary.LittleEndian.Uint16(buf[off+16:]))
			if reclen < 19 || off+reclen > k {
				return unix.EIO
			}
			nameBytes := buf[off+19 : off+reclen]
			if i := bytes.IndexByte(nameBytes, 0); i >= 0 {
				nameBytes = nameBytes[:i]
			}
			fn(string(nameBytes), binary.LittleEndian.Uint64(buf[off:]), buf[off+18])
			off += reclen
		}
	}
}

// dirHandle reads a directory for one READDIR(PLUS) request: the kernel opens
// directories without asking us (see rawFS), so a reader's place between requests is
// only the offset it gives.
//
// An entry's offset (the cookie to resume after it) is a hash of its name, and a listing
// is sorted by it, as ext4 does: an offset means the same place in any listing of the
// directory. The kernel's listing cache (FOPEN_CACHE_DIR) is shared by every reader of
// the directory, and a reader that was served from it continues, once the cache is
// dropped, with a READDIR at an offset another listing gave: with offsets that were
// positions in one listing, it resumed at the wrong place in a fresh one, and a name
// nobody touched was skipped or repeated.
type dirHandle struct {
	n *node
	// mu guards everything below (go-fuse also serialises calls on one handle).
	mu  sync.Mutex
	l   *listing
	pos int // index of the next entry in l.entries
	// fds are the directory's layer fds for the lookups of a READDIRPLUS (nil until
	// the first); closed on release.
	fds    *lookup.DirFds
	fdsRel string
}

var (
	_ = (gofs.NodeOpendirHandler)((*node)(nil))
	_ = (gofs.FileLookuper)((*dirHandle)(nil))
	_ = (gofs.FileReaddirenter)((*dirHandle)(nil))
	_ = (gofs.FileSeekdirer)((*dirHandle)(nil))
	_ = (gofs.FileReleasedirer)((*dirHandle)(nil))
	_ = (gofs.FileFsyncdirer)((*dirHandle)(nil))
)

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	// The kernel may keep the listing: only the daemon changes a directory, and the
	// kernel drops its copy itself on every change it asks for (fuse_dir_changed).
	return &dirHandle{n: n}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// fstat reads the attributes of the directory as last seen.
func (d *dirHandle) fstat() (unix.Stat_t, error) {
	if st, ok := d.n.lastAttr(); ok {
		return st, nil
	}
	return unix.Stat_t{}, unix.ENOENT
}

// load finds the directory's listing: the one made for the previous request when no
// name in the directory changed since (a listing read in several requests is merged
// once), else a fresh one.
func (d *dirHandle) load() syscall.Errno {
	if d.l != nil {
		return 0
	}
	gen := d.n.gen()
	if l := d.n.ofs.listings.find(d.n, gen); l != nil {
		d.l = l
		return 0
	}
	rel, errno := d.n.rel()
	if errno != 0 {
		return errno
	}
	var top unix.Stat_t
	ls := d.n.getLayers()
	ents, from, fresh, err := d.n.ofs.mergedEntriesFrom(rel, ls, &top)
	if err != nil {
		return toErrno(err)
	}
	if fresh {
		d.n.listed(&top, ls)
	}
	self := d.n.StableAttr().Ino
	parent := self
	if p := d.n.parentNode(); p != nil {
		parent = p.StableAttr().Ino
	}
	for i := range ents {
		ents[i].Off = nameCookie(ents[i].Name)
	}
	order := make([]int32, len(ents))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int { return cmp.Compare(ents[a].Off, ents[b].Off) })
	entries := make([]fuse.DirEntry, 2, 2+len(ents))
	entries[0] = fuse.DirEntry{Name: ".", Mode: unix.S_IFDIR, Ino: self, Off: 1}
	entries[1] = fuse.DirEntry{Name: "..", Mode: unix.S_IFDIR, Ino: parent, Off: 2}
	froms := make([]int16, 2, 2+len(ents))
	for _, i := range order {
		entries = append(entries, ents[i])
		froms = append(froms, from[i])
	}
	named := entries[2:]
	for i := 1; i < len(named); i++ {
		// Two names with one hash (odds 2^-61): keep the offsets strictly increasing.
		if named[i].Off <= named[i-1].Off {
			named[i].Off = named[i-1].Off + 1
		}
	}
	d.l = &listing{dir: d.n, gen: gen, entries: entries, from: froms}
	d.n.ofs.listings.add(d.l)
	return 0
}

// nameCookie is the offset of the entry name: 3 and up ("." and ".." are 1 and 2), below
// 2^62 (an loff_t must stay positive after the kernel adds to it).
func nameCookie(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()>>2 | 3
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if errno := d.load(); errno != 0 {
		return nil, errno
	}
	if d.pos >= len(d.l.entries) {
		return nil, 0
	}
	e := d.l.entries[d.pos]
	d.pos++
	return &e, 0
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pos = 0
	if off == 0 {
		return 0 // rewinddir
	}
	if errno := d.load(); errno != 0 {
		return errno
	}
	// Resume after the entry whose offset is off, wherever it is (or was) in the listing.
	d.pos, _ = slices.BinarySearchFunc(d.l.entries, off+1, func(e fuse.DirEntry, t uint64) int { return cmp.Compare(e.Off, t) })
	return 0
}

// Lookup looks up an entry of a READDIRPLUS reply, opening each layer's copy of the
// directory once for all of them.
func (d *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fds == nil {
		rel, errno := d.n.rel()
		if errno != 0 {
			return nil, errno
		}
		d.fds, d.fdsRel = d.n.dirFds(rel), rel
	}
	// go-fuse looks up the entry Readdirent just gave.
	from := 0
	if i := d.pos - 1; d.l != nil && i >= 0 && i < len(d.l.entries) && d.l.entries[i].Name == name {
		from = int(d.l.from[i])
		// A name-only walk gets no attributes of what it will not enter (walk.go):
		// go-fuse leaves the entry's nodeid 0, and the kernel looks the name up if
		// it ever needs it.
		if !isDir(d.l.entries[i].Mode) && d.n.ofs.walks.lazy(callerPid(ctx)) {
			return nil, syscall.EAGAIN
		}
	}
	return d.n.lookupIn(ctx, d.fds, d.fdsRel, name, from, out)
}

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fds != nil {
		d.fds.Close()
		d.fds = nil
	}
}

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	if !d.n.isUpper() || d.n.ofs.stack.Opts.Volatile {
		return 0
	}
	rel, errno := d.n.rel()
	if errno != 0 {
		return errno
	}
	fd, err := sysx.OpenBeneath(d.n.ofs.stack.Layers[layers.Upper].Root, rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return toErrno(err)
	}
	defer unix.Close(fd)
	return toErrno(unix.Fsync(fd))
}

// listingCacheSize bounds the listings kept for readers coming back for more.
const listingCacheSize = 64

// listing is one merged listing of a directory, "." and ".." first, then sorted by offset.
type listing struct {
	dir     *node
	gen     uint64 // the directory's generation it was made at
	entries []fuse.DirEntry
	// from is, by entry, the layer the entry was found in (0 for "." and "..").
	from []int16
}

// listings holds the newest listings, oldest dropped first.
type listings struct {
	// mu guards all fields.
	mu   sync.Mutex
	ring [listingCacheSize]*listing
	next int // slot to reuse
}

func (c *listings) add(l *listing) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ring[c.next] = l
	c.next = (c.next + 1) % listingCacheSize
}

// find returns the listing of dir made at generation gen, if still kept.
func (c *listings) find(dir *node, gen uint64) *listing {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.ring {
		if l != nil && l.dir == dir && l.gen == gen {
			return l
		}
	}
	return nil
}
