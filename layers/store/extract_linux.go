package store

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/cowfs/cowfs/internal/sysx"
	"github.com/cowfs/cowfs/whiteout"
	"golang.org/x/sys/unix"
)

// ExtractOptions says how a layer tar is written out.
type ExtractOptions struct {
	// Format is how whiteouts and opaque directories are written: char 0/0 devices or
	// `.wh.` files, and the opaque xattr's namespace. An empty XattrPrefix writes
	// opaque directories as `.wh..wh..opq` files.
	Format whiteout.Format
	// Devices allows character and block device entries (only root can make them).
	Devices bool
	// Chown sets the owners of the tar (only root can).
	Chown bool
}

// EntryError is an import error about one tar entry.
type EntryError struct {
	Entry string
	Err   error
}

func (e *EntryError) Error() string { return fmt.Sprintf("layer entry %q: %v", e.Entry, e.Err) }
func (e *EntryError) Unwrap() error { return e.Err }

// Errors of hostile or broken entries.
var (
	ErrEscape       = errors.New("path leaves the layer")
	ErrThroughLink  = errors.New("path goes through a symlink")
	ErrNotDir       = errors.New("a parent is not a directory")
	ErrReserved     = errors.New("name is reserved for whiteout markers")
	ErrDevice       = errors.New("device files can only be imported by root")
	ErrCharWhiteout = errors.New("a char 0/0 device is an overlay whiteout; layers must use .wh. files")
	ErrLinkTarget   = errors.New("hard link target is missing, a directory or outside the layer")
	ErrReplacesDir  = errors.New("entry would replace a directory")
	ErrType         = errors.New("unsupported entry type")
)

// Extract writes the layer tar tr into the directory rootfd (an empty directory,
// opened with O_PATH or O_RDONLY) in the overlay format of opts.Format, never writing
// outside it: every parent is opened with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS),
// and the last name is created with *at calls that do not follow symlinks. An entry
// that would escape or that collides with a marker name is an *EntryError.
//
// OCI layer semantics (image-spec layer.md): `.wh.NAME` hides NAME in the layers below
// and `.wh..wh..opq` hides the whole directory below; a whiteout and an entry of the
// same name in one layer mean the entry replaces the lower one (a directory becomes
// opaque). A later entry of the same name replaces an earlier non-directory.
func Extract(rootfd int, tr *tar.Reader, opts ExtractOptions) error {
	x := &extractor{root: rootfd, opts: opts, dirs: map[string]*tar.Header{}}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the layer tar: %w", err)
		}
		if err := x.entry(hdr, tr); err != nil {
			var ee *EntryError
			if errors.As(err, &ee) {
				return err
			}
			return &EntryError{Entry: hdr.Name, Err: err}
		}
	}
	return x.finishDirs()
}

type extractor struct {
	root int
	opts ExtractOptions
	// dirs holds the headers of directory entries, whose mode and times are set at the
	// end (creating children changes a directory's mtime; a read-only mode would stop them).
	dirs map[string]*tar.Header
}

// cleanName turns a tar name into a relative path with no "." or "" components,
// refusing absolute paths and "..".
func cleanName(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("absolute path: %w", ErrEscape)
	}
	var parts []string
	for _, p := range strings.Split(name, "/") {
		switch p {
		case "", ".":
		case "..":
			return "", fmt.Errorf("\"..\" component: %w", ErrEscape)
		default:
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "/"), nil
}

func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	}
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if rel == "" {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("the layer root must be a directory: %w", ErrType)
		}
		return nil // the root's own metadata is the store's
	}
	dir, name := sysx.Split(rel)
	for _, c := range strings.Split(dir, "/") {
		if whiteout.IsInternalName(c) {
			return fmt.Errorf("directory %q: %w", c, ErrReserved)
		}
	}
	parent, err := x.mkdirAll(dir)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	if whiteout.IsInternalName(name) {
		if hdr.Typeflag == tar.TypeDir {
			return fmt.Errorf("a directory: %w", ErrReserved)
		}
		if name == whiteout.OpaqueName {
			return x.markOpaque(parent, "")
		}
		target, ok := whiteout.Target(name)
		if !ok || target == "." || target == ".." || whiteout.IsInternalName(target) {
			return ErrReserved
		}
		return x.whiteout(parent, target)
	}
	if hdr.Typeflag == tar.TypeDir {
		return x.dir(parent, rel, name, hdr)
	}
	if err := x.clear(parent, name); err != nil {
		return err
	}
	return x.nonDir(parent, name, hdr, r)
}

// mkdirAll opens dir (creating missing directories, which tars often leave out) beneath
// the root and returns an O_PATH fd of it.
func (x *extractor) mkdirAll(dir string) (int, error) {
	fd, err := x.open(dir)
	if err == nil || !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	parentDir, name := sysx.Split(dir)
	parent, err := x.mkdirAll(parentDir)
	if err != nil {
		return -1, err
	}
	defer unix.Close(parent)
	if err := x.makeDir(parent, name, 0o755); err != nil {
		return -1, err
	}
	return x.open(dir)
}

// open opens dir beneath the root with O_PATH, naming the hostile cases.
func (x *extractor) open(dir string) (int, error) {
	fd, err := sysx.OpenBeneath(x.root, dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	switch {
	case err == nil:
		return fd, nil
	case errors.Is(err, unix.ELOOP):
		return -1, ErrThroughLink
	case errors.Is(err, unix.ENOTDIR):
		// O_NOFOLLOW|O_DIRECTORY on a symlink as the last name gives ENOTDIR too.
		if dir != "" && x.isSymlink(dir) {
			return -1, ErrThroughLink
		}
		return -1, ErrNotDir
	case errors.Is(err, unix.EXDEV):
		return -1, ErrEscape
	}
	return -1, err
}

// isSymlink reports whether rel (beneath the root) is a symlink.
func (x *extractor) isSymlink(rel string) bool {
	dir, name := sysx.Split(rel)
	fd, err := sysx.OpenBeneath(x.root, dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return errors.Is(err, unix.ELOOP)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	return unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK
}

// makeDir creates directory name in parent; over a whiteout written earlier in this
// tar, the new directory is opaque (OCI: it replaces the lower one).
func (x *extractor) makeDir(parent int, name string, mode uint32) error {
	wasWhiteout, err := x.removeWhiteout(parent, name)
	if err != nil {
		return err
	}
	if err := unix.Mkdirat(parent, name, mode); err != nil {
		return err
	}
	if wasWhiteout {
		return x.markOpaque(parent, name)
	}
	return nil
}

// removeWhiteout removes a whiteout of name (either format) written earlier.
func (x *extractor) removeWhiteout(parent int, name string) (bool, error) {
	k, err := whiteout.At(parent, name)
	if err != nil {
		return false, err
	}
	switch k {
	case whiteout.CharWhiteout, whiteout.FileWhiteout:
		return true, whiteout.Remove(parent, name, k)
	}
	return false, nil
}

// markOpaque marks directory name in parent ("" for parent itself) opaque.
func (x *extractor) markOpaque(parent int, name string) error {
	if x.opts.Format.XattrPrefix == "" {
		fd, err := sysx.OpenBeneath(parent, name, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		f, err := unix.Openat(fd, whiteout.OpaqueName, unix.O_CREAT|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return err
		}
		return unix.Close(f)
	}
	return sysx.Setxattr(parent, name, x.opts.Format.OpaqueAttr(), []byte("y"), 0)
}

// whiteout hides target, unless this tar already put an entry there: then a directory
// becomes opaque and anything else already hides the lower name.
func (x *extractor) whiteout(parent int, target string) error {
	var st unix.Stat_t
	err := unix.Fstatat(parent, target, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return x.markOpaque(parent, target)
	case err == nil:
		return nil
	case !errors.Is(err, unix.ENOENT):
		return err
	}
	if k, err := whiteout.At(parent, target); err != nil || k != whiteout.None {
		return err
	}
	return x.opts.Format.Create(parent, target)
}

// dir creates or updates directory rel (name in parent).
func (x *extractor) dir(parent int, rel, name string, hdr *tar.Header) error {
	var st unix.Stat_t
	err := unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
	case err == nil && whiteout.IsCharWhiteout(&st), errors.Is(err, unix.ENOENT):
		if err := x.makeDir(parent, name, 0o700); err != nil {
			return err
		}
	case err == nil:
		if err := unix.Unlinkat(parent, name, 0); err != nil {
			return err
		}
		if err := x.makeDir(parent, name, 0o700); err != nil {
			return err
		}
	default:
		return err
	}
	if err := x.owner(parent, name, hdr); err != nil {
		return err
	}
	if err := x.xattrs(parent, name, hdr); err != nil {
		return err
	}
	x.dirs[rel] = hdr
	return nil
}

// clear removes what an earlier entry or whiteout left at name, refusing to replace a
// directory.
func (x *extractor) clear(parent int, name string) error {
	if _, err := x.removeWhiteout(parent, name); err != nil {
		return err
	}
	var st unix.Stat_t
	err := unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return err
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return ErrReplacesDir
	}
	return unix.Unlinkat(parent, name, 0)
}

// nonDir creates a file, link, symlink, device or fifo.
func (x *extractor) nonDir(parent int, name string, hdr *tar.Header, r io.Reader) error {
	mode := uint32(hdr.Mode & 0o7777)
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		return x.file(parent, name, hdr, r)
	case tar.TypeLink:
		return x.link(parent, name, hdr)
	case tar.TypeSymlink:
		if err := unix.Symlinkat(hdr.Linkname, parent, name); err != nil {
			return err
		}
	case tar.TypeChar, tar.TypeBlock:
		if !x.opts.Devices {
			return ErrDevice
		}
		if hdr.Typeflag == tar.TypeChar && hdr.Devmajor == 0 && hdr.Devminor == 0 {
			return ErrCharWhiteout
		}
		kind := uint32(unix.S_IFCHR)
		if hdr.Typeflag == tar.TypeBlock {
			kind = unix.S_IFBLK
		}
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknodat(parent, name, kind|mode, int(dev)); err != nil {
			return err
		}
	case tar.TypeFifo:
		if err := unix.Mknodat(parent, name, unix.S_IFIFO|mode, 0); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w %q", ErrType, string(hdr.Typeflag))
	}
	if err := x.owner(parent, name, hdr); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeSymlink {
		// After chown, which clears set-id bits.
		if err := unix.Fchmodat(parent, name, mode, 0); err != nil {
			return err
		}
	}
	if err := x.xattrs(parent, name, hdr); err != nil {
		return err
	}
	return setTimes(parent, name, hdr)
}

// file writes a regular file.
func (x *extractor) file(parent int, name string, hdr *tar.Header, r io.Reader) error {
	fd, err := unix.Openat(parent, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	if _, err := io.Copy(f, r); err != nil {
		return err
	}
	if x.opts.Chown {
		if err := f.Chown(hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	// After chown, which clears set-id bits.
	if err := unix.Fchmod(fd, uint32(hdr.Mode&0o7777)); err != nil {
		return err
	}
	if err := x.xattrs(parent, name, hdr); err != nil {
		return err
	}
	return setTimes(parent, name, hdr)
}

// link makes a hard link to an entry written earlier in this tar.
func (x *extractor) link(parent int, name string, hdr *tar.Header) error {
	target, err := cleanName(hdr.Linkname)
	if err != nil {
		return fmt.Errorf("hard link to %q: %w", hdr.Linkname, err)
	}
	tdir, tname := sysx.Split(target)
	if tname == "" || whiteout.IsInternalName(tname) {
		return fmt.Errorf("hard link to %q: %w", hdr.Linkname, ErrLinkTarget)
	}
	tparent, err := x.open(tdir)
	if err != nil {
		return fmt.Errorf("hard link to %q: %w", hdr.Linkname, err)
	}
	defer unix.Close(tparent)
	var st unix.Stat_t
	if err := unix.Fstatat(tparent, tname, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil ||
		st.Mode&unix.S_IFMT == unix.S_IFDIR || whiteout.IsCharWhiteout(&st) {
		return fmt.Errorf("hard link to %q: %w", hdr.Linkname, ErrLinkTarget)
	}
	return unix.Linkat(tparent, tname, parent, name, 0)
}

// owner sets the tar's owner when allowed.
func (x *extractor) owner(parent int, name string, hdr *tar.Header) error {
	if !x.opts.Chown {
		return nil
	}
	return unix.Fchownat(parent, name, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW)
}

// xattrs sets the tar's extended attributes, a user's attribute in a marker namespace
// stored one level down (whiteout.StoredXattr) so that a layer cannot forge a marker.
func (x *extractor) xattrs(parent int, name string, hdr *tar.Header) error {
	keys := make([]string, 0, len(hdr.PAXRecords))
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, paxXattr) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		attr := whiteout.StoredXattr(strings.TrimPrefix(k, paxXattr))
		if err := sysx.Setxattr(parent, name, attr, []byte(hdr.PAXRecords[k]), 0); err != nil {
			return fmt.Errorf("xattr %q: %w", attr, err)
		}
	}
	return nil
}

func setTimes(parent int, name string, hdr *tar.Header) error {
	ts := []unix.Timespec{unix.NsecToTimespec(hdr.ModTime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
	if !hdr.AccessTime.IsZero() {
		ts[0] = unix.NsecToTimespec(hdr.AccessTime.UnixNano())
	}
	return unix.UtimesNanoAt(parent, name, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// finishDirs sets the directories' modes and times, deepest first.
func (x *extractor) finishDirs() error {
	paths := make([]string, 0, len(x.dirs))
	for p := range x.dirs {
		paths = append(paths, p)
	}
	sort.Slice(paths, func(i, j int) bool { return paths[i] > paths[j] })
	for _, p := range paths {
		hdr := x.dirs[p]
		dir, name := sysx.Split(p)
		parent, err := x.open(dir)
		if err != nil {
			return &EntryError{Entry: hdr.Name, Err: err}
		}
		err = unix.Fchmodat(parent, name, uint32(hdr.Mode&0o7777), 0)
		if err == nil {
			err = setTimes(parent, name, hdr)
		}
		unix.Close(parent)
		if err != nil {
			return &EntryError{Entry: hdr.Name, Err: err}
		}
	}
	return nil
}
