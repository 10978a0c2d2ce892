package copyup

import (
	"errors"
	"fmt"

	"github.com/cowfs/cowfs/internal/sysx"
	"github.com/cowfs/cowfs/layers"
	"github.com/cowfs/cowfs/lookup"
	"github.com/cowfs/cowfs/whiteout"
	"golang.org/x/sys/unix"
)

// metaFile creates tmp in work as a file of size bytes with no data (one hole) and the
// metacopy marker, whose empty value is what the kernel writes without fs-verity
// (ovl_set_metacopy_xattr).
func (c *Copier) metaFile(work int, tmp string, size int64) error {
	fd, err := unix.Openat(work, tmp, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, size); err != nil {
		return err
	}
	if err := unix.Fsetxattr(fd, c.MetacopyAttr(), nil, 0); err != nil {
		return fmt.Errorf("set %s: %w", c.MetacopyAttr(), err)
	}
	return nil
}

// Data completes the metacopy file rel in the upper layer with its data from layer
// dataLayer (none when noData: the caller truncates it to zero), in place as the kernel
// does (ovl_copy_up_meta_inode_data), so upper hard links of it stay one file: the data
// is copied into the sparse upper file and synced, then the metacopy marker is removed.
// That removal is the commit: until it, readers take the data from below, so a crash
// half-way leaves a metacopy file that still reads right. The upper file's owner, mode,
// times and security.capability (which a write drops) are what they were before.
func (c *Copier) Data(rel string, dataLayer int, noData bool) error {
	parent, name := sysx.Split(rel)
	up, err := c.stack.OpenDir(layers.Upper, parent)
	if err != nil {
		return fmt.Errorf("copy up data of %q: %w", rel, err)
	}
	defer unix.Close(up)
	var st unix.Stat_t
	if err := unix.Fstatat(up, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("copy up data of %q: %w", rel, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("copy up data of %q: not a regular file: %w", rel, unix.EIO)
	}
	dst, restoreMode, err := openWritable(up, name, &st)
	if err != nil {
		return fmt.Errorf("copy up data of %q: %w", rel, err)
	}
	defer unix.Close(dst)
	caps, capErr := sysx.Getxattr(up, name, "security.capability")
	if err := c.fill(dst, dataLayer, parent, name, &st, noData); err != nil {
		restoreMode()
		return fmt.Errorf("copy up data of %q: %w", rel, err)
	}
	// The mode as it was: a write may drop set-id bits, and restoreMode undoes a
	// temporary u+w. Then the capability, which a write drops.
	var now unix.Stat_t
	if err := unix.Fstat(dst, &now); err != nil {
		return fmt.Errorf("copy up data of %q: %w", rel, err)
	}
	if now.Mode != st.Mode {
		if err := unix.Fchmod(dst, st.Mode&0o7777); err != nil {
			return fmt.Errorf("copy up data of %q: %w", rel, err)
		}
	}
	if _, err := sysx.Getxattr(up, name, "security.capability"); capErr == nil && err != nil {
		if err := unix.Fsetxattr(dst, "security.capability", caps, 0); err != nil {
			return fmt.Errorf("copy up data of %q: keep security.capability: %w", rel, err)
		}
	}
	attr := lookup.MetacopyPrefix(c.stack) + whiteout.MetacopyXattr
	if err := unix.Fremovexattr(dst, attr); err != nil && !sysx.IsNoData(err) {
		return fmt.Errorf("copy up data of %q: remove %s: %w", rel, attr, err)
	}
	// The kernel leaves the copy's mtime at the time of the data copy-up; an open for
	// write that writes nothing should not change it, and metacopy=off keeps it.
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, sysx.ProcPath(dst, ""), ts, 0); err != nil {
		return fmt.Errorf("copy up data of %q: %w", rel, err)
	}
	return nil
}

// fill copies the data of name in layer dataLayer's directory parent into dst, the
// upper metacopy file of st's size.
func (c *Copier) fill(dst, dataLayer int, parent, name string, st *unix.Stat_t, noData bool) error {
	if noData {
		// Empty before the marker goes, so a crash never leaves the hole readable.
		return unix.Ftruncate(dst, 0)
	}
	if st.Size == 0 {
		return nil
	}
	dir, err := c.stack.OpenDir(dataLayer, parent)
	if err != nil {
		return fmt.Errorf("data layer %d: %w", dataLayer, err)
	}
	defer unix.Close(dir)
	src, err := sysx.OpenatNoatime(dir, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("data layer %d: %w", dataLayer, err)
	}
	defer unix.Close(src)
	var sst unix.Stat_t
	if err := unix.Fstat(src, &sst); err != nil {
		return err
	}
	if sst.Size == st.Size {
		if err := unix.IoctlFileClone(dst, src); err == nil {
			return c.sync(dst)
		}
	}
	// The upper file is one hole of its size: write the extents of the data into it.
	if err := copyExtents(dst, src, min(st.Size, sst.Size)); err != nil {
		return err
	}
	if err := unix.Ftruncate(dst, st.Size); err != nil {
		return err
	}
	return c.sync(dst)
}

// openWritable opens the upper file name for writing. An unprivileged daemon may own a
// file without write permission (mode 0444): it is opened with u+w for the copy, and
// the returned func puts the mode back (the caller also sets it at the end).
func openWritable(dirfd int, name string, st *unix.Stat_t) (int, func(), error) {
	flags := unix.O_WRONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(dirfd, name, flags, 0)
	if err == nil || !errors.Is(err, unix.EACCES) {
		return fd, func() {}, err
	}
	if err := unix.Fchmodat(dirfd, name, (st.Mode&0o7777)|0o200, 0); err != nil {
		return -1, nil, err
	}
	restore := func() { _ = unix.Fchmodat(dirfd, name, st.Mode&0o7777, 0) }
	fd, err = unix.Openat(dirfd, name, flags, 0)
	if err != nil {
		restore()
		return -1, nil, err
	}
	return fd, restore, nil
}
