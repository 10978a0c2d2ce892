// Package copyup brings lower objects into the upper layer before they change: parents
// first, each built in the work directory and renamed into place, so a crash never leaves
// a partial copy visible (overlayfs.rst "Copy up"; kernel ovl_copy_up_one).
package copyup

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"

	"github.com/cowfs/cowfs/internal/sysx"
	"github.com/cowfs/cowfs/layers"
	"github.com/cowfs/cowfs/lookup"
	"github.com/cowfs/cowfs/whiteout"
	"golang.org/x/sys/unix"
)

// Copier copies objects up in one stack. It is safe for concurrent use; callers
// serialise copy-ups of the same object (the fs node's copy-up lock).
type Copier struct {
	stack *layers.Stack
	seq   atomic.Uint64
	// noClone marks, by layer, the lower layers a reflink (FICLONE) to the upper was
	// refused from: not asked again (one system call less a copy, on ext4 always).
	noClone []atomic.Bool
	// chownAlways: copies need their owner set even when it is the daemon's (a new
	// file takes the group of a set-group-ID work directory).
	chownAlways bool
	euid, egid  int
}

// New returns a Copier for stack, which must be writable.
func New(stack *layers.Stack) *Copier {
	c := &Copier{stack: stack, noClone: make([]atomic.Bool, len(stack.Layers)),
		euid: os.Geteuid(), egid: os.Getegid()}
	var st unix.Stat_t
	c.chownAlways = unix.Fstat(stack.Work, &st) != nil || st.Mode&unix.S_ISGID != 0
	return c
}

// TempName returns a fresh scratch name in the work dir.
func (c *Copier) TempName() string {
	return layers.TempName(c.seq.Add(1))
}

// Source is the lower object to copy.
type Source struct {
	// Layer is the lower layer holding it; Rel its path there and in the upper.
	Layer int
	Rel   string
	// Ino is the inode number the merged view shows for it, recorded as its origin
	// (zero records none), with Gen, which sets apart objects showing the same number
	// (lookup.Entry.Gen).
	Ino, Gen uint64
	// NoData skips the data (the caller truncates it to zero right after).
	NoData bool
	// Meta copies the metadata only (a regular file): the copy has the size but no
	// data, and the metacopy marker, which sends reads to the data below (Metacopy).
	Meta bool
	// DataLayer is the layer holding the data when it is not Layer (Layer holds a
	// metacopy file); 0 means Layer (the upper, 0, is never a source).
	DataLayer int
	// Dirs, when set, lends the fds of the parent directory's copies (the parent's
	// node keeps them open); nil opens them from the layer roots.
	Dirs lookup.Opener
}

// openDir opens the copy in layer li of the directory parent, through o when set, and
// returns it with the function that lets go of it.
func (c *Copier) openDir(o lookup.Opener, li int, parent string) (int, func(), error) {
	if o != nil {
		fd, release, err := o.OpenLayerDir(li, parent)
		if err != nil {
			return -1, nil, err
		}
		if release == nil {
			release = func() { unix.Close(fd) }
		}
		return fd, release, nil
	}
	fd, err := c.stack.OpenDir(li, parent)
	if err != nil {
		return -1, nil, err
	}
	return fd, func() { unix.Close(fd) }, nil
}

// Metacopy reports whether this mount makes metadata-only copies (option metacopy=on
// and an upper that takes the marker xattr).
func (c *Copier) Metacopy() bool {
	return c.stack.Opts.Metacopy && c.stack.Format.XattrPrefix != ""
}

// MetacopyAttr is the full name of the metacopy marker this mount writes.
func (c *Copier) MetacopyAttr() string {
	return lookup.MetacopyPrefix(c.stack) + whiteout.MetacopyXattr
}

// Dir copies the directory src up as an empty directory with its metadata (Layer
// holds the copy it takes them from); its upper parent must exist. One that is
// there already is left as it is.
func (c *Copier) Dir(src Source) error {
	rel := src.Rel
	parent, name := sysx.Split(rel)
	srcDir, releaseSrc, err := c.openDir(src.Dirs, src.Layer, parent)
	if err != nil {
		return fmt.Errorf("copy up %q: %w", rel, err)
	}
	defer releaseSrc()
	var st unix.Stat_t
	if err := unix.Fstatat(srcDir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("copy up %q: %w", rel, err)
	}
	upParent, releaseUp, err := c.openDir(src.Dirs, layers.Upper, parent)
	if err != nil {
		return fmt.Errorf("copy up %q: upper parent: %w", rel, err)
	}
	defer releaseUp()
	pst, err := statDir(upParent)
	if err != nil {
		return err
	}
	tmp := c.TempName()
	work := c.stack.Work
	if err := unix.Mkdirat(work, tmp, 0o700); err != nil {
		return fmt.Errorf("copy up %q: %w", rel, err)
	}
	if err := c.finishMeta(src.Layer, srcDir, name, work, tmp, &st, src.Ino, 0); err != nil {
		layers.RemoveAt(work, tmp)
		return fmt.Errorf("copy up %q: %w", rel, err)
	}
	err = unix.Renameat2(work, tmp, upParent, name, unix.RENAME_NOREPLACE)
	if err != nil {
		layers.RemoveAt(work, tmp)
		if errors.Is(err, unix.EEXIST) {
			return nil // copied up by someone else meanwhile
		}
		return fmt.Errorf("copy up %q: %w", rel, err)
	}
	restoreTimes(upParent, &pst)
	return nil
}

// File copies the non-directory src up and returns once it is in place in the upper layer.
// The upper parent directory must exist (EnsureDir).
func (c *Copier) File(src Source) error {
	parent, name := sysx.Split(src.Rel)
	srcDir, releaseSrc, err := c.openDir(src.Dirs, src.Layer, parent)
	if err != nil {
		return fmt.Errorf("copy up %q: %w", src.Rel, err)
	}
	defer releaseSrc()
	var st unix.Stat_t
	if err := unix.Fstatat(srcDir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("copy up %q: %w", src.Rel, err)
	}
	upParent, releaseUp, err := c.openDir(src.Dirs, layers.Upper, parent)
	if err != nil {
		return fmt.Errorf("copy up %q: upper parent: %w", src.Rel, err)
	}
	defer releaseUp()
	pst, err := statDir(upParent)
	if err != nil {
		return err
	}
	dataDir, dataLayer := srcDir, src.Layer
	if src.DataLayer != 0 && src.DataLayer != src.Layer && !src.Meta {
		var releaseData func()
		if dataDir, releaseData, err = c.openDir(src.Dirs, src.DataLayer, parent); err != nil {
			return fmt.Errorf("copy up %q: data: %w", src.Rel, err)
		}
		defer releaseData()
		dataLayer = src.DataLayer
	}
	work := c.stack.Work
	tmp := c.TempName()
	if err := c.build(srcDir, dataDir, dataLayer, name, work, tmp, &st, src); err != nil {
		unix.Unlinkat(work, tmp, 0)
		return fmt.Errorf("copy up %q: %w", src.Rel, err)
	}
	// Publish. The name may hold nothing (the lower object shows through) and never a
	// whiteout (the object is visible), so RENAME_NOREPLACE is right.
	if err := unix.Renameat2(work, tmp, upParent, name, unix.RENAME_NOREPLACE); err != nil {
		unix.Unlinkat(work, tmp, 0)
		return fmt.Errorf("copy up %q: %w", src.Rel, err)
	}
	restoreTimes(upParent, &pst)
	return nil
}

// build makes the copy of name (in srcDir, its data in dataDir) as tmp in the work dir,
// complete but for its name: data, owner, mode, xattrs, origin, times; fsynced unless
// the mount is volatile. A metadata-only copy gets the size and the metacopy marker
// instead of the data, and no fsync (nothing of it is lost that the lower does not
// hold; kernel ovl_do_copy_up skips it too, to keep chown -R fast).
func (c *Copier) build(srcDir, dataDir, dataLayer int, name string, work int, tmp string, st *unix.Stat_t, src Source) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if src.Meta {
			if err := c.metaFile(work, tmp, st.Size); err != nil {
				return err
			}
			break
		}
		if err := c.copyData(dataDir, dataLayer, name, work, tmp, st, src.NoData); err != nil {
			return err
		}
	case unix.S_IFLNK:
		target, err := readlinkat(srcDir, name)
		if err != nil {
			return err
		}
		if err := unix.Symlinkat(target, work, tmp); err != nil {
			return err
		}
	default: // fifo, socket, device
		if err := unix.Mknodat(work, tmp, st.Mode, int(st.Rdev)); err != nil {
			return err
		}
	}
	return c.finishMeta(src.Layer, srcDir, name, work, tmp, st, src.Ino, src.Gen)
}

// finishMeta copies owner, mode, xattrs and times from name in srcDir to tmp in work, and
// records the origin inode number and generation.
func (c *Copier) finishMeta(li, srcDir int, name string, work int, tmp string, st *unix.Stat_t, ino, gen uint64) error {
	isLink := st.Mode&unix.S_IFMT == unix.S_IFLNK
	// xattr_permissions: the owner and mode go to the upper's override xattr (from the
	// lower's override, if it has one); the copy stays the daemon's, readable by it.
	override := c.stack.WritesOverride()
	if override != "" && layers.HasOverride(st) {
		eff := *st
		c.stack.ApplyOverride(li, srcDir, name, &eff)
		if err := sysx.ChmodNoFollow(work, tmp, layers.BackingPerm(st.Mode&0o7777)); err != nil {
			return err
		}
		if err := copyXattrs(srcDir, name, work, tmp); err != nil {
			return err
		}
		if err := sysx.Setxattr(work, tmp, override, layers.OverrideOf(&eff).Value(), 0); err != nil {
			return fmt.Errorf("record owner and mode in %s: %w", override, err)
		}
	} else {
		// A new file is the daemon's already: most of a container image is root's.
		if c.chownAlways || int(st.Uid) != c.euid || int(st.Gid) != c.egid {
			if err := unix.Fchownat(work, tmp, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return err
			}
		}
		if !isLink {
			// After the chown, which clears set-id bits.
			if err := sysx.ChmodNoFollow(work, tmp, st.Mode&0o7777); err != nil {
				return err
			}
		}
		if err := copyXattrs(srcDir, name, work, tmp); err != nil {
			return err
		}
	}
	if ino != 0 && c.stack.Format.XattrPrefix != "" {
		err := sysx.Setxattr(work, tmp, c.stack.Format.XattrPrefix+lookup.OriginXattr, lookup.EncodeOrigin(ino, gen), 0)
		if err != nil && !(isLink && c.stack.Format.XattrPrefix == whiteout.UserPrefix) {
			return fmt.Errorf("record origin: %w", err)
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	return unix.UtimesNanoAt(work, tmp, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// copyXattrs copies every xattr but the overlay's own markers.
func copyXattrs(srcDir int, name string, work int, tmp string) error {
	attrs, err := sysx.Listxattr(srcDir, name)
	if err != nil {
		if sysx.IsNoData(err) {
			return nil
		}
		return err
	}
	for _, a := range attrs {
		if _, visible := whiteout.UserXattr(a); !visible {
			continue // markers of the lower layer are not the object's
		}
		v, err := sysx.Getxattr(srcDir, name, a)
		if err != nil {
			if sysx.IsNoData(err) {
				continue
			}
			return fmt.Errorf("read xattr %s: %w", a, err)
		}
		if err := sysx.Setxattr(work, tmp, a, v, 0); err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) && strings.HasPrefix(a, "system.") {
				continue // e.g. ACLs on a filesystem without them
			}
			return fmt.Errorf("copy xattr %s: %w", a, err)
		}
	}
	return nil
}

func statDir(fd int) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstat(fd, &st)
	return st, err
}

// restoreTimes puts back a parent directory's times after a copy-up renamed something into
// it: copy-up must not change what users see (kernel ovl_set_timestamps on the parent).
func restoreTimes(dirfd int, st *unix.Stat_t) {
	ts := []unix.Timespec{st.Atim, st.Mtim}
	_ = unix.UtimesNanoAt(dirfd, ".", ts, 0)
}

func readlinkat(dirfd int, name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, len(buf)*4)
	}
}
