package fs

import (
	"cmp"
	"context"
	"hash/fnv"
	"slices"
	"sync"
	"syscall"
	"unsafe"

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
// show. "." and ".." are not included.
func (o *overlayFS) mergedEntries(rel string, dirLayers []int) ([]fuse.DirEntry, error) {
	var out []fuse.DirEntry
	seen := map[string]int{} // name -> index in out, or -1 for a hidden name
	inoFixed := map[int]bool{}
	for _, li := range dirLayers {
		fd, err := sysx.OpenBeneath(o.stack.Layers[li].Root, rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			if sysx.IsNotExist(err) {
				continue
			}
			return nil, err
		}
		marks, _ := whiteout.ReadDirMarks(fd, "")
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
		})
		unix.Close(fd)
		if err != nil {
			return nil, err
		}
	}
	return out, nil
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

// readDirents calls fn for each entry of the directory fd, with its inode number and type.
func readDirents(fd int, fn func(name string, ino uint64, typ uint8)) error {
	buf := make([]byte, 32<<10)
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
		for off := 0; off < k; {
			d := (*unix.Dirent)(unsafe.Pointer(&buf[off]))
			nameBytes := buf[off+int(unsafe.Offsetof(d.Name)) : off+int(d.Reclen)]
			for i, c := range nameBytes {
				if c == 0 {
					nameBytes = nameBytes[:i]
					break
				}
			}
			fn(string(nameBytes), d.Ino, d.Type)
			off += int(d.Reclen)
		}
	}
}

// dirHandle is an open directory: a snapshot of the merged listing taken at the first
// read, so offsets stay valid across seekdir/telldir while the directory changes.
//
// An entry's offset (the cookie to resume after it) is a hash of its name, and the
// snapshot is sorted by it, as ext4 does: an offset means the same place in any
// snapshot of the directory. The kernel's listing cache (FOPEN_CACHE_DIR) is shared by
// every open handle of the directory, and a reader that was served from it continues,
// once the cache is dropped, with a READDIR on its own handle at an offset that another
// handle's snapshot gave: with offsets that were positions in a snapshot, it resumed at
// the wrong place in its fresh one, and a name nobody touched was skipped or repeated.
type dirHandle struct {
	n *node
	// fd is an O_PATH fd of the directory's topmost copy at open, so fstat keeps
	// working after the directory is removed or replaced; -1 if it could not be had.
	fd int
	// mu guards entries and pos (go-fuse also serialises calls on one handle).
	mu      sync.Mutex
	entries []fuse.DirEntry
	pos     int
	loaded  bool
}

var (
	_ = (gofs.NodeOpendirHandler)((*node)(nil))
	_ = (gofs.FileReaddirenter)((*dirHandle)(nil))
	_ = (gofs.FileSeekdirer)((*dirHandle)(nil))
	_ = (gofs.FileReleasedirer)((*dirHandle)(nil))
	_ = (gofs.FileFsyncdirer)((*dirHandle)(nil))
)

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	d := &dirHandle{n: n, fd: -1}
	if rel, errno := n.rel(); errno == 0 {
		if fd, err := n.ofs.stack.OpenDir(n.top(), rel); err == nil {
			d.fd = fd
		}
	}
	// The kernel may keep the listing: only the daemon changes a directory, and the
	// kernel drops its copy itself on every change it asks for (fuse_dir_changed).
	return d, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// fstat reads the attributes of the directory as it was opened.
func (d *dirHandle) fstat() (unix.Stat_t, error) {
	var st unix.Stat_t
	if d.fd < 0 {
		return st, unix.ENOENT
	}
	err := unix.Fstat(d.fd, &st)
	return st, err
}

func (d *dirHandle) load() syscall.Errno {
	if d.loaded {
		return 0
	}
	rel, errno := d.n.rel()
	if errno != 0 {
		return errno
	}
	ents, err := d.n.ofs.mergedEntries(rel, d.n.getLayers())
	if err != nil {
		return toErrno(err)
	}
	self := d.n.StableAttr().Ino
	parent := self
	if p := d.n.parentNode(); p != nil {
		parent = p.StableAttr().Ino
	}
	d.entries = append([]fuse.DirEntry{
		{Name: ".", Mode: unix.S_IFDIR, Ino: self},
		{Name: "..", Mode: unix.S_IFDIR, Ino: parent},
	}, ents...)
	d.entries[0].Off, d.entries[1].Off = 1, 2
	named := d.entries[2:]
	for i := range named {
		named[i].Off = nameCookie(named[i].Name)
	}
	slices.SortFunc(named, func(a, b fuse.DirEntry) int { return cmp.Compare(a.Off, b.Off) })
	for i := 1; i < len(named); i++ {
		// Two names with one hash (odds 2^-61): keep the offsets strictly increasing.
		if named[i].Off <= named[i-1].Off {
			named[i].Off = named[i-1].Off + 1
		}
	}
	d.loaded = true
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
	if d.pos >= len(d.entries) {
		return nil, 0
	}
	e := d.entries[d.pos]
	d.pos++
	return &e, 0
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off == 0 {
		// rewinddir: a fresh listing, as on any filesystem.
		d.loaded = false
		d.pos = 0
		return 0
	}
	if errno := d.load(); errno != 0 {
		return errno
	}
	// Resume after the entry whose offset is off, wherever it is (or was) in the listing.
	d.pos, _ = slices.BinarySearchFunc(d.entries, off+1, func(e fuse.DirEntry, t uint64) int { return cmp.Compare(e.Off, t) })
	return 0
}

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	if d.fd >= 0 {
		unix.Close(d.fd)
		d.fd = -1
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
