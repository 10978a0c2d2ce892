// Package lookup resolves a name in a merged directory through the layers, top down,
// and caches the answers.
//
// The merge rule (overlayfs.rst, "directories"; kernel ovl_lookup_layer): walking the
// layers that contribute to the parent from the top, a whiteout ends the walk (the name
// does not exist); a non-directory ends it with that object, unless a directory was
// already found above, in which case the non-directory is hidden; a directory is
// collected and the walk goes on below it unless it is opaque. A regular file marked
// metacopy (metadata-only copy-up) ends it too, but its data is the next regular file
// of the same name below that is not itself metacopy (see findData).
package lookup

import (
	"errors"
	"fmt"
	"os"

	"github.com/cowfs/cowfs/internal/sysx"
	"github.com/cowfs/cowfs/layers"
	"github.com/cowfs/cowfs/whiteout"
	"golang.org/x/sys/unix"
)

// Entry is where a merged name lives.
type Entry struct {
	// Layers are the layers holding the object, top-down: one for a non-directory, every
	// contributing layer for a directory. Layers[0] is the topmost, whose attributes show.
	// A metacopy file (its metadata copied up without its data) has two: the layer of
	// its metadata, then the layer holding its data at the same path.
	Layers []int
	// Mode is the file type bits of the object.
	Mode uint32
	// Ino is the inode number the merged view shows (stable across copy-up and remount).
	Ino uint64
	// Gen tells apart objects that show the same Ino, so go-fuse (which merges nodes by
	// number and generation) keeps them apart: each name of a lower file with several
	// links (a copy-up breaks the link, as in kernel overlayfs without index) gets one,
	// and its upper copy keeps it (recorded with the origin). 0 for everything else.
	Gen uint64
	// Multi: a lower non-directory with several hard links.
	Multi bool
	// Stat, when not nil, is the topmost object's attributes as the walk read them (never
	// from the cache).
	Stat *unix.Stat_t
}

// Dir is the parent directory of a lookup.
type Dir struct {
	// ID and Gen identify the directory and its current generation for the cache; Gen must
	// change after every change of a name in the directory, to a value the directory
	// never had. A caller that never gives two directories the same Gen (fs numbers
	// all generations from one sequence) may leave ID 0.
	ID, Gen uint64
	// Rel is the directory's path relative to every layer root ("" for the root).
	Rel string
	// Layers are the layers contributing to the directory, top-down.
	Layers []int
}

// ErrNotExist is returned when the name does not exist in the merged view.
var ErrNotExist = fmt.Errorf("no such entry: %w", unix.ENOENT)

// Resolver resolves names; it is safe for concurrent use.
type Resolver struct {
	stack *layers.Stack
	cache *Cache
	// metaPrefix is the namespace of the metacopy marker (MetacopyPrefix).
	metaPrefix string
}

// New returns a Resolver over stack, caching in c (nil: no cache).
func New(stack *layers.Stack, c *Cache) *Resolver {
	return &Resolver{stack: stack, cache: c, metaPrefix: MetacopyPrefix(stack)}
}

// Lookup resolves name in dir.
func (r *Resolver) Lookup(dir Dir, name string) (Entry, error) {
	fds := NewDirFds(r.stack, dir.Rel)
	defer fds.Close()
	return r.LookupIn(fds, dir, name)
}

// LookupIn resolves name in dir, using (and filling) fds, which must be dir's. A fresh
// walk (not an answer from the cache) also returns the attributes it read, in Entry.Stat.
func (r *Resolver) LookupIn(fds *DirFds, dir Dir, name string) (Entry, error) {
	return r.lookupIn(fds, dir, name, true, 0)
}

// LookupListed is LookupIn for a name of a directory listing (a READDIRPLUS entry): it
// answers from the cache but does not fill it. The kernel keeps what a listing gives it
// as long as it would keep a LOOKUP's answer, so a walk's names would fill the cache for
// nothing, and each Set wakes ristretto's goroutine on another thread: a cold `find` of
// the benchmark tree made 187,000 futex calls for 25,800 requests (from Set and the
// scheduler's wake-ups it set off), 29,000 without these Sets. A name the kernel
// forgot comes back as a LOOKUP, and that one is cached.
//
// from is the topmost layer in which the directory's listing found name (0: unknown).
// The listing saw every layer's entries: a lower layer above from holds neither name nor
// a whiteout of it, or the name would have been listed from there or hidden, and lower
// layers never change, so the walk does not look in them (the upper is always looked
// at, as it may have changed since). In a cold `find` of the benchmark tree, 114,000 of
// the daemon's 180,000 fstatat calls were such absent names.
func (r *Resolver) LookupListed(fds *DirFds, dir Dir, name string, from int) (Entry, error) {
	return r.lookupIn(fds, dir, name, false, from)
}

func (r *Resolver) lookupIn(fds *DirFds, dir Dir, name string, fill bool, from int) (Entry, error) {
	if whiteout.IsInternalName(name) {
		return Entry{}, ErrNotExist
	}
	cache := worthCaching(dir)
	if cache {
		if e, ok := r.cache.get(dir, name); ok {
			if e.Layers == nil {
				return Entry{}, ErrNotExist
			}
			return e, nil
		}
	}
	e, err := r.resolve(fds, dir.Layers, name, from)
	// Only directories are kept (see fillsCache).
	if cache && fill && err == nil && fillsCache(e) {
		c := e
		c.Stat = nil // attributes change without a change of the directory
		r.cache.set(dir, name, c)
	}
	return e, err
}

// LookupBelow resolves name in dir using only the layers below the upper: it tells
// whether removing the upper entry would expose a lower one (kernel ovl_lower_positive).
func (r *Resolver) LookupBelow(dir Dir, name string) (Entry, error) {
	ls := dir.Layers
	if len(ls) > 0 && r.stack.Writable && ls[0] == layers.Upper {
		ls = ls[1:]
	}
	fds := NewDirFds(r.stack, dir.Rel)
	defer fds.Close()
	return r.resolve(fds, ls, name, 0)
}

// resolve walks the layers; it holds the whole merge rule. Lower layers above from are
// skipped (LookupListed).
func (r *Resolver) resolve(fds *DirFds, dirLayers []int, name string, from int) (Entry, error) {
	var e Entry
	var dirIno uint64
	rel := fds.rel
	for _, li := range dirLayers {
		if li < from && r.stack.Lower(li) {
			continue
		}
		dirfd, err := fds.Get(li)
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
				continue // this layer's copy of the directory went away under us
			}
			return Entry{}, fmt.Errorf("layer %d %q: %w", li, rel, err)
		}
		// In the walk's last layer a `.wh.NAME` file changes nothing: the name is not
		// there either way (one fstatat less for every new name in an upper-only directory).
		last := li == dirLayers[len(dirLayers)-1]
		found, st, err := r.statIn(fds, li, dirfd, name, !last)
		if err != nil {
			return Entry{}, fmt.Errorf("layer %d %q: %w", li, name, err)
		}
		switch found {
		case absent:
			continue
		case whitedOut:
			return r.done(e, dirIno)
		}
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		if !isDir {
			if e.Layers != nil {
				// A non-directory below a directory is hidden and ends the walk.
				return r.done(e, dirIno)
			}
			e.Layers = []int{li}
			e.Mode = st.Mode & unix.S_IFMT
			if e.Mode == unix.S_IFREG {
				mc, err := r.isMetacopy(li, dirfd, name)
				if err != nil {
					return Entry{}, fmt.Errorf("layer %d %q: %w", li, name, err)
				}
				if mc {
					// Metadata here, data further down (kernel ovl_lookup: "lowerdata").
					data, err := r.findData(fds, dirLayers, li, name)
					if err != nil {
						return Entry{}, err
					}
					e.Layers = append(e.Layers, data)
				}
			}
			e.Ino, e.Gen = r.fileIno(li, dirfd, rel, name, &st)
			e.Multi = r.stack.Lower(li) && st.Nlink > 1
			// A copy: taking st's address would put every layer's st on the heap.
			top := st
			e.Stat = &top
			return e, nil
		}
		if e.Layers == nil {
			e.Mode = unix.S_IFDIR
			dirIno = r.mapIno(li, st.Ino)
			top := st
			e.Stat = &top
		} else if len(e.Layers) == 1 && e.Layers[0] == layers.Upper && r.stack.Writable {
			// A merged directory shows the inode number of its topmost lower copy,
			// which stays the same when the directory is copied up.
			dirIno = r.mapIno(li, st.Ino)
		}
		e.Layers = append(e.Layers, li)
		if li == dirLayers[len(dirLayers)-1] {
			break // nothing below for an opaque marker to hide
		}
		marks, err := whiteout.ReadDirMarks(dirfd, name)
		if err != nil {
			return Entry{}, fmt.Errorf("layer %d %q: %w", li, name, err)
		}
		if marks.Opaque {
			break
		}
	}
	return r.done(e, dirIno)
}

func (r *Resolver) done(e Entry, dirIno uint64) (Entry, error) {
	if e.Layers == nil {
		return Entry{}, ErrNotExist
	}
	e.Ino = dirIno
	return e, nil
}

type presence int

const (
	absent presence = iota
	present
	whitedOut
)

// statIn looks at name in layer li's copy of the directory (dirfd, opened through fds),
// recognising every whiteout format (a `.wh.NAME` file of an absent name only when
// whFiles).
func (r *Resolver) statIn(fds *DirFds, li, dirfd int, name string, whFiles bool) (presence, unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil:
		if whiteout.IsCharWhiteout(&st) {
			return whitedOut, st, nil
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0 {
			marks, err := fds.Marks(li)
			if err == nil && marks.XattrWhiteouts && whiteout.IsXattrWhiteout(dirfd, name) {
				return whitedOut, st, nil
			}
		}
		return present, st, nil
	case errors.Is(err, unix.ENOENT):
		if !whFiles {
			return absent, st, nil
		}
		wh, err := whiteout.HasWhiteoutFile(dirfd, name)
		if err != nil {
			return absent, st, err
		}
		if wh {
			return whitedOut, st, nil
		}
		return absent, st, nil
	case errors.Is(err, unix.ENAMETOOLONG):
		return absent, st, err
	default:
		return absent, st, err
	}
}

// Metacopy reports whether e is a regular file whose data lies in another layer than its
// metadata: Layers[0] holds the attributes, Layers[1] the data.
func (e Entry) Metacopy() bool { return e.Mode == unix.S_IFREG && len(e.Layers) > 1 }

// MetacopyPrefix is the xattr namespace of the metacopy marker this mount writes and
// honours: the one its other markers use ("trusted." when privileged, "user." when not,
// like the kernel's userxattr option); a read-only mount, which writes nothing, reads
// the one its privileges allow.
func MetacopyPrefix(s *layers.Stack) string {
	if s.Format.XattrPrefix != "" {
		return s.Format.XattrPrefix
	}
	if os.Geteuid() == 0 {
		return whiteout.TrustedPrefix
	}
	return whiteout.UserPrefix
}

// isMetacopy reports whether the regular file name in layer li's directory dirfd is
// marked metacopy. The upper is always looked at, so an upper made with metacopy=on
// reads right on any later mount; lower layers only on a metacopy=on mount, as the
// kernel refuses to follow lower metacopy files otherwise.
func (r *Resolver) isMetacopy(li, dirfd int, name string) (bool, error) {
	if r.stack.Lower(li) && !r.stack.Opts.Metacopy {
		return false, nil
	}
	return whiteout.IsMetacopy(dirfd, name, r.metaPrefix)
}

// ErrNoData is the error for a metacopy file whose data is nowhere below (the kernel's
// "metacopy with no lower data found").
var ErrNoData = fmt.Errorf("metacopy file without lower data: %w", unix.EIO)

// findData finds the layer holding the data of the metacopy file name, found in layer
// above of the directory rel contributed to by dirLayers: the first layer below it with
// a regular file of that name that is not itself metacopy. A whiteout or another kind
// of object first, or nothing at all, is ErrNoData (kernel ovl_lookup_single/ovl_lookup).
func (r *Resolver) findData(fds *DirFds, dirLayers []int, above int, name string) (int, error) {
	rel := fds.rel
	for _, li := range dirLayers {
		if li <= above {
			continue
		}
		dirfd, err := fds.Get(li)
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
				continue
			}
			return 0, fmt.Errorf("layer %d %q: %w", li, rel, err)
		}
		found, st, err := r.statIn(fds, li, dirfd, name, true)
		if err == nil && found == present && st.Mode&unix.S_IFMT == unix.S_IFREG {
			var mc bool
			mc, err = r.isMetacopy(li, dirfd, name)
			if err == nil && !mc {
				return li, nil
			}
			if err == nil {
				found = absent // metadata only in this layer too: its data is further down
			}
		}
		switch {
		case err != nil:
			return 0, fmt.Errorf("layer %d %q: %w", li, name, err)
		case found == absent:
			continue
		}
		break
	}
	return 0, fmt.Errorf("%q: %w", sysx.Join(rel, name), ErrNoData)
}
