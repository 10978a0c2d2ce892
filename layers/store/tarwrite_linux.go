package store

import (
	"archive/tar"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/cowfs/cowfs/internal/sysx"
	"github.com/cowfs/cowfs/whiteout"
	"golang.org/x/sys/unix"
)

// paxXattr is the PAX record prefix of an extended attribute (GNU tar, Docker, OCI).
const paxXattr = "SCHILY.xattr."

// markerTime is the mtime of the `.wh.` entries written: whiteouts have no meaningful
// time, and a fixed one keeps the tar of a tree a function of its content.
var markerTime = time.Unix(0, 0)

// WriteTar writes the tree at dir as an OCI layer tar: entries sorted by name, each
// directory's `.wh..wh..opq` first; every whiteout format cowfs reads (char 0/0, `.wh.`
// file, xattr whiteout) becomes a `.wh.NAME` entry and an opaque directory a
// `.wh..wh..opq` entry; user attributes are written under their user-visible names
// and markers are left out; mtimes are whole seconds. The root directory itself and
// sockets are not written. The result is canonical: extracting it and writing the
// extracted tree again gives the same bytes.
func WriteTar(w io.Writer, dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	d := os.NewFile(uintptr(fd), dir)
	defer d.Close()
	tw := &tarWriter{tw: tar.NewWriter(w), links: map[[2]uint64]string{}}
	if err := tw.dir(d, ""); err != nil {
		return err
	}
	if err := tw.tw.Close(); err != nil {
		return fmt.Errorf("tar of %s: %w", dir, err)
	}
	return nil
}

// tarWriter writes one tree.
type tarWriter struct {
	tw *tar.Writer
	// links maps (dev, ino) of a multiply linked file to the first name written.
	links map[[2]uint64]string
}

// out is one entry to write in a directory.
type out struct {
	name     string // the name in the tar (".wh.X" for a whiteout of X)
	onDisk   string // the directory entry, or "" for a whiteout
	st       unix.Stat_t
	isMarker bool
}

// dir writes the entries of the open directory d, whose tree path is rel ("" for the root).
func (w *tarWriter) dir(d *os.File, rel string) error {
	dirfd := int(d.Fd())
	names, err := d.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("list %q: %w", rel, err)
	}
	present := map[string]bool{}
	for _, n := range names {
		if !whiteout.IsInternalName(n) {
			present[n] = true
		}
	}
	marks, err := whiteout.ReadDirMarks(dirfd, "")
	if err != nil {
		return fmt.Errorf("markers of %q: %w", rel, err)
	}
	entries := map[string]out{}
	for _, n := range names {
		if n == whiteout.OpaqueName {
			continue // ReadDirMarks counted it
		}
		if target, ok := whiteout.Target(n); ok {
			// A stray `.wh.` file next to a real entry hides nothing (whiteout.At);
			// `.wh..wh.*` names other than the opaque marker are no whiteouts.
			if !present[target] && !whiteout.IsInternalName(target) {
				entries[n] = out{name: n, isMarker: true}
			}
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(dirfd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("stat %q: %w", sysx.Join(rel, n), err)
		}
		isWhiteout := whiteout.IsCharWhiteout(&st) ||
			(marks.XattrWhiteouts && st.Mode&unix.S_IFMT == unix.S_IFREG && whiteout.IsXattrWhiteout(dirfd, n))
		switch {
		case isWhiteout:
			entries[whiteout.Prefix+n] = out{name: whiteout.Prefix + n, isMarker: true}
		case st.Mode&unix.S_IFMT == unix.S_IFSOCK:
			// A tar cannot hold a socket (GNU tar and Docker skip them too).
		default:
			entries[n] = out{name: n, onDisk: n, st: st}
		}
	}
	if marks.Opaque {
		if err := w.marker(sysx.Join(rel, whiteout.OpaqueName)); err != nil {
			return err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(entries)) {
		e := entries[name]
		p := sysx.Join(rel, name)
		if e.isMarker {
			if err := w.marker(p); err != nil {
				return err
			}
			continue
		}
		if err := w.entry(dirfd, p, e); err != nil {
			return err
		}
	}
	return nil
}

// marker writes an empty `.wh.` entry at p.
func (w *tarWriter) marker(p string) error {
	hdr := &tar.Header{Name: p, Typeflag: tar.TypeReg, Mode: 0o644, ModTime: markerTime}
	if err := w.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("tar entry %q: %w", p, err)
	}
	return nil
}

// entry writes the entry e of dirfd at tree path p (recursing into a directory).
func (w *tarWriter) entry(dirfd int, p string, e out) error {
	st := &e.st
	hdr := &tar.Header{
		Name:    p,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(st.Mtim.Sec, 0),
	}
	attrs, err := userXattrs(dirfd, e.onDisk)
	if err != nil {
		return fmt.Errorf("xattrs of %q: %w", p, err)
	}
	if len(attrs) > 0 {
		hdr.PAXRecords = map[string]string{}
		for k, v := range attrs {
			hdr.PAXRecords[paxXattr+k] = v
		}
	}
	var data *os.File
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case unix.S_IFREG:
		key := [2]uint64{st.Dev, st.Ino}
		if first, ok := w.links[key]; ok && st.Nlink > 1 {
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
			break
		}
		if st.Nlink > 1 {
			w.links[key] = p
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
		// A metacopy file (an upper written with metacopy=on) holds no data: its data
		// is in a lower layer, which a tar of the upper alone cannot reach.
		for _, prefix := range []string{whiteout.TrustedPrefix, whiteout.UserPrefix} {
			if mc, err := whiteout.IsMetacopy(dirfd, e.onDisk, prefix); mc || err != nil {
				return fmt.Errorf("%q is a metacopy file (its data is in a lower layer; written by a metacopy=on mount), which a layer cannot hold", p)
			}
		}
		fd, err := unix.Openat(dirfd, e.onDisk, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %q: %w", p, err)
		}
		data = os.NewFile(uintptr(fd), p)
		defer data.Close()
	case unix.S_IFLNK:
		target, err := readlinkat(dirfd, e.onDisk)
		if err != nil {
			return fmt.Errorf("readlink %q: %w", p, err)
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	default:
		return fmt.Errorf("entry %q: unsupported file type %o", p, st.Mode&unix.S_IFMT)
	}
	if err := w.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("tar entry %q: %w", p, err)
	}
	if data != nil {
		n, err := io.Copy(w.tw, data)
		if err != nil {
			return fmt.Errorf("tar data of %q: %w", p, err)
		}
		if n != hdr.Size {
			return fmt.Errorf("tar data of %q: the file changed size while being read", p)
		}
	}
	if hdr.Typeflag != tar.TypeDir {
		return nil
	}
	fd, err := unix.Openat(dirfd, e.onDisk, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %q: %w", p, err)
	}
	sub := os.NewFile(uintptr(fd), p)
	defer sub.Close()
	return w.dir(sub, p)
}

// userXattrs reads the attributes of name in dirfd under their user-visible names
// (whiteout.UserXattr), leaving out markers.
func userXattrs(dirfd int, name string) (map[string]string, error) {
	stored, err := sysx.Listxattr(dirfd, name)
	if err != nil {
		if sysx.IsNoData(err) {
			return nil, nil
		}
		return nil, err
	}
	attrs := map[string]string{}
	for _, a := range stored {
		user, ok := whiteout.UserXattr(a)
		if !ok {
			continue
		}
		v, err := sysx.Getxattr(dirfd, name, a)
		if err != nil {
			if sysx.IsNoData(err) {
				continue
			}
			return nil, err
		}
		attrs[user] = string(v)
	}
	return attrs, nil
}

func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}
