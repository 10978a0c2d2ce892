package copyup

import (
	"errors"
	"io"

	"github.com/cowfs/cowfs/internal/sysx"
	"golang.org/x/sys/unix"
)

// copyData creates tmp in work with the data of the regular file name in srcDir (of
// layer li): by reflink (FICLONE) where the filesystems share blocks, else
// copy_file_range, else a read/write loop; walking SEEK_DATA/SEEK_HOLE so holes stay
// holes, in a file with fewer blocks than its size needs.
func (c *Copier) copyData(srcDir, li int, name string, work int, tmp string, st *unix.Stat_t, noData bool) error {
	dst, err := unix.Openat(work, tmp, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	defer unix.Close(dst)
	if noData || st.Size == 0 {
		return nil
	}
	src, err := sysx.OpenatNoatime(srcDir, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(src)
	if !c.noClone[li].Load() {
		err := unix.IoctlFileClone(dst, src)
		if err == nil {
			return c.sync(dst)
		}
		if cloneUnsupported(err) {
			c.noClone[li].Store(true)
		}
	}
	if st.Blocks*512 >= st.Size {
		// No room for a hole: one extent, and the copy ends at the size.
		if err := copyRange(dst, src, 0, st.Size); err != nil {
			return err
		}
		return c.sync(dst)
	}
	if err := copyExtents(dst, src, st.Size); err != nil {
		return err
	}
	if err := unix.Ftruncate(dst, st.Size); err != nil { // a trailing hole
		return err
	}
	return c.sync(dst)
}

// cloneUnsupported tells a FICLONE that can never work between these filesystems from
// one that failed for this file.
func cloneUnsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EXDEV) ||
		errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS)
}

func (c *Copier) sync(fd int) error {
	if c.stack.Opts.Volatile {
		return nil
	}
	return unix.Fsync(fd)
}

// copyExtents copies the data extents of src to the same offsets of dst.
func copyExtents(dst, src int, size int64) error {
	var off int64
	for off < size {
		data, err := unix.Seek(src, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole remains
		}
		if err != nil {
			// No SEEK_DATA support: one extent covering the whole file.
			return copyRange(dst, src, 0, size)
		}
		hole, err := unix.Seek(src, data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		if err := copyRange(dst, src, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// copyRange copies n bytes at off, with copy_file_range, else pread/pwrite.
func copyRange(dst, src int, off, n int64) error {
	soff, doff := off, off
	for n > 0 {
		chunk := n
		if chunk > 1<<30 {
			chunk = 1 << 30
		}
		w, err := unix.CopyFileRange(src, &soff, dst, &doff, int(chunk), 0)
		if err != nil {
			if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
				return copyLoop(dst, src, soff, n)
			}
			return err
		}
		if w == 0 {
			return io.ErrUnexpectedEOF // the lower file shrank: layers are read-only, so it is damaged
		}
		n -= int64(w)
	}
	return nil
}

func copyLoop(dst, src int, off, n int64) error {
	buf := make([]byte, 1<<20)
	for n > 0 {
		want := int64(len(buf))
		if want > n {
			want = n
		}
		r, err := unix.Pread(src, buf[:want], off)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return err
		}
		if r == 0 {
			return io.ErrUnexpectedEOF
		}
		for w := 0; w < r; {
			k, err := unix.Pwrite(dst, buf[w:r], off+int64(w))
			if err != nil {
				if errors.Is(err, unix.EINTR) {
					continue
				}
				return err
			}
			w += k
		}
		off += int64(r)
		n -= int64(r)
	}
	return nil
}
