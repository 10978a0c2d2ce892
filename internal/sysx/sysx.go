// Package sysx holds the fd-relative system calls the other packages share: opening a
// path strictly beneath a layer root, and extended attributes of an entry named relative
// to a directory fd. Nothing here ever follows a symlink inside a layer.
package sysx

import (
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// beneath is the resolution every layer path gets: stay below the root, never follow a
// symlink (a directory in the merged view is a real directory in every layer that
// contributes it, so refusing symlinks on the way is always right), no /proc magic links.
const beneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// OpenFlags are the open flags the kernel knows (VALID_OPEN_FLAGS). openat2 refuses
// any other bit (EINVAL) where openat ignores it, and FUSE passes on the opener's
// f_flags, which hold more: __FMODE_EXEC for an exec, FMODE_NONOTIFY for fanotify.
const OpenFlags = unix.O_ACCMODE | unix.O_CREAT | unix.O_EXCL | unix.O_NOCTTY | unix.O_TRUNC |
	unix.O_APPEND | unix.O_NONBLOCK | unix.O_SYNC | unix.O_DSYNC | unix.O_ASYNC | unix.O_DIRECT |
	unix.O_LARGEFILE | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_NOATIME | unix.O_CLOEXEC |
	unix.O_PATH | unix.O_TMPFILE

// OpenBeneath opens rel (relative to root, "" for root itself) with flags, never
// leaving root and never following a symlink, the last component included. A rel
// longer than the kernel takes in one path (PATH_MAX: a tree thousands of levels deep)
// is opened piece by piece, each piece beneath the directory the previous one opened.
func OpenBeneath(root int, rel string, flags int, mode uint32) (int, error) {
	dir := root
	for len(rel) >= pathPiece {
		i := strings.LastIndexByte(rel[:pathPiece], '/')
		if i <= 0 {
			closeUnless(dir, root)
			return -1, unix.ENAMETOOLONG
		}
		fd, err := openBeneath(dir, rel[:i], unix.O_PATH|unix.O_DIRECTORY, 0)
		closeUnless(dir, root)
		if err != nil {
			return -1, err
		}
		dir, rel = fd, rel[i+1:]
	}
	fd, err := openBeneath(dir, rel, flags, mode)
	closeUnless(dir, root)
	return fd, err
}

// pathPiece is the longest path OpenBeneath hands the kernel at once (PATH_MAX is 4096
// with the terminating NUL).
const pathPiece = 4000

func closeUnless(fd, keep int) {
	if fd != keep {
		unix.Close(fd)
	}
}

func openBeneath(root int, rel string, flags int, mode uint32) (int, error) {
	if rel == "" {
		rel = "."
	}
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW), Mode: uint64(mode), Resolve: beneath}
	for {
		fd, err := unix.Openat2(root, rel, &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

// Reads of a lower layer: kernel overlayfs opens every lower file and directory
// O_NOATIME (ovl_path_open), so that reading through the mount never changes a layer,
// which other mounts may share. O_NOATIME needs the file's owner or CAP_FOWNER; where
// it is refused (EPERM) the file is opened without it, as the kernel does.

// OpenatNoatime is unix.Openat of an existing name, with O_NOATIME where allowed.
func OpenatNoatime(dirfd int, name string, flags int) (int, error) {
	fd, err := unix.Openat(dirfd, name, flags|unix.O_NOATIME, 0)
	if err == unix.EPERM {
		fd, err = unix.Openat(dirfd, name, flags, 0)
	}
	return fd, err
}

// OpenBeneathNoatime is OpenBeneath of an existing name, with O_NOATIME where allowed.
func OpenBeneathNoatime(root int, rel string, flags int) (int, error) {
	fd, err := OpenBeneath(root, rel, flags|unix.O_NOATIME, 0)
	if err == unix.EPERM {
		fd, err = OpenBeneath(root, rel, flags, 0)
	}
	return fd, err
}

// ChmodNoFollow changes the mode of entry name in dirfd ("" or "." for dirfd itself)
// without following a symlink there (a symlink is EOPNOTSUPP). fchmodat(2) has no
// working AT_SYMLINK_NOFOLLOW, and a plain fchmodat follows a symlink that replaced the
// entry since it was looked up (a layer directory swapped for a symlink pointing out).
// fchmodat2 (Linux 6.6) does it in one call; without it the entry is opened
// O_PATH|O_NOFOLLOW, checked, and changed through its fd (four calls).
func ChmodNoFollow(dirfd int, name string, mode uint32) error {
	if !noFchmodat2.Load() {
		flags := unix.AT_SYMLINK_NOFOLLOW
		if name == "" {
			flags |= unix.AT_EMPTY_PATH
		}
		err := fchmodat2(dirfd, name, mode, flags)
		if err != unix.ENOSYS {
			return err
		}
		noFchmodat2.Store(true)
	}
	if name == "" || name == "." {
		return unix.Fchmodat(unix.AT_FDCWD, ProcPath(dirfd, ""), mode, 0)
	}
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return unix.EOPNOTSUPP
	}
	return unix.Fchmodat(unix.AT_FDCWD, ProcPath(fd, ""), mode, 0)
}

// noFchmodat2 is set once the kernel answered ENOSYS to fchmodat2.
var noFchmodat2 atomic.Bool

func fchmodat2(dirfd int, name string, mode uint32, flags int) error {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	_, _, errno := unix.Syscall6(unix.SYS_FCHMODAT2, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		uintptr(mode), uintptr(flags), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// ProcPath names the entry `name` in the directory fd through /proc, for the calls that
// have no *at form (the xattr calls). An empty name names the directory itself.
func ProcPath(fd int, name string) string {
	p := "/proc/self/fd/" + strconv.Itoa(fd)
	if name != "" {
		p += "/" + name
	}
	return p
}

// Getxattr reads attribute attr of entry name in directory dirfd without following a
// symlink at name ("" means the directory itself).
func Getxattr(dirfd int, name, attr string) ([]byte, error) {
	if useXattrAt(name) {
		v, err := readGrowing(func(dest []byte) (int, error) { return getxattrat(dirfd, name, attr, dest) })
		if !fellBack(err) {
			return v, err
		}
	}
	p := ProcPath(dirfd, name)
	return readGrowing(func(dest []byte) (int, error) {
		if name == "" {
			return unix.Getxattr(p, attr, dest)
		}
		return unix.Lgetxattr(p, attr, dest)
	})
}

// readGrowing calls read with a buffer of 256 bytes, then, while read says ERANGE, with
// one of the size read(nil) reports (plus one, to tell a value that grew in between).
func readGrowing(read func(dest []byte) (int, error)) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := read(buf)
		if err == unix.ERANGE {
			size, err := read(nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, size+1)
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// Listxattr lists the attribute names of entry name in dirfd ("" for dirfd itself).
func Listxattr(dirfd int, name string) ([]string, error) {
	var buf []byte
	var err error
	atCall := useXattrAt(name)
	if atCall {
		buf, err = readGrowing(func(dest []byte) (int, error) { return listxattrat(dirfd, name, dest) })
	}
	if !atCall || fellBack(err) {
		p := ProcPath(dirfd, name)
		buf, err = readGrowing(func(dest []byte) (int, error) {
			if name == "" {
				return unix.Listxattr(p, dest)
			}
			return unix.Llistxattr(p, dest)
		})
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range strings.Split(string(buf), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	return names, nil
}

// Setxattr sets attribute attr of entry name in dirfd ("" for dirfd itself).
func Setxattr(dirfd int, name, attr string, data []byte, flags int) error {
	if useXattrAt(name) {
		if err := setxattrat(dirfd, name, attr, data, flags); !fellBack(err) {
			return err
		}
	}
	p := ProcPath(dirfd, name)
	if name == "" {
		return unix.Setxattr(p, attr, data, flags)
	}
	return unix.Lsetxattr(p, attr, data, flags)
}

// Removexattr removes attribute attr of entry name in dirfd ("" for dirfd itself).
func Removexattr(dirfd int, name, attr string) error {
	if useXattrAt(name) {
		if err := removexattrat(dirfd, name, attr); !fellBack(err) {
			return err
		}
	}
	p := ProcPath(dirfd, name)
	if name == "" {
		return unix.Removexattr(p, attr)
	}
	return unix.Lremovexattr(p, attr)
}

// IsNotExist reports whether err means "no such entry".
func IsNotExist(err error) bool {
	return errors.Is(err, unix.ENOENT)
}

// IsNoData reports whether err means "no such attribute" (or attributes not supported).
func IsNoData(err error) bool {
	return errors.Is(err, unix.ENODATA) || errors.Is(err, unix.EOPNOTSUPP)
}

// Split returns the parent of rel and its last name; the root ("") has parent "" and name "".
func Split(rel string) (dir, name string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}

// Join joins a relative directory path and a name.
func Join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}
