package sysx

import (
	"runtime"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The *xattrat system calls (Linux 6.13) name an entry relative to a directory fd, as
// the other *at calls do. Without them, an entry's attributes are reached through
// /proc/self/fd/N/name: the kernel then walks /proc, jumps through the fd's magic link
// and only then looks the name up, for every attribute read during a lookup. With
// them it looks up one name. An entry is always named with AT_SYMLINK_NOFOLLOW; the
// directory itself ("" as the name) still goes through /proc, because the AT_EMPTY_PATH
// form refuses the O_PATH fds the layers are walked with.

// noXattrAt is set once the kernel answered ENOSYS to one of the *xattrat calls.
var noXattrAt atomic.Bool

// xattrArgs is the kernel's struct xattr_args (XATTR_ARGS_SIZE_VER0).
type xattrArgs struct {
	value uint64
	size  uint32
	flags uint32
}

// useXattrAt reports whether attributes of entry name in a directory fd go through the
// *xattrat calls.
func useXattrAt(name string) bool { return name != "" && !noXattrAt.Load() }

// fellBack records an ENOSYS from the kernel and reports whether err was one.
func fellBack(err error) bool {
	if err == unix.ENOSYS {
		noXattrAt.Store(true)
		return true
	}
	return false
}

func getxattrat(dirfd int, name, attr string, dest []byte) (int, error) {
	return xattrat(unix.SYS_GETXATTRAT, dirfd, name, attr, dest, 0, true)
}

func setxattrat(dirfd int, name, attr string, data []byte, flags int) error {
	_, err := xattrat(unix.SYS_SETXATTRAT, dirfd, name, attr, data, flags, true)
	return err
}

func removexattrat(dirfd int, name, attr string) error {
	_, err := xattrat(unix.SYS_REMOVEXATTRAT, dirfd, name, attr, nil, 0, false)
	return err
}

// xattrat makes one of the *xattrat calls that name an attribute of entry name in dirfd:
// getxattrat and setxattrat take the value (buf) and flags in a struct xattr_args
// (withArgs), removexattrat takes neither.
func xattrat(trap uintptr, dirfd int, name, attr string, buf []byte, flags int, withArgs bool) (int, error) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return 0, err
	}
	a, err := unix.BytePtrFromString(attr)
	if err != nil {
		return 0, err
	}
	var args *xattrArgs
	var size uintptr
	if withArgs {
		args = &xattrArgs{size: uint32(len(buf)), flags: uint32(flags)}
		if len(buf) > 0 {
			args.value = uint64(uintptr(unsafe.Pointer(&buf[0])))
		}
		size = unsafe.Sizeof(*args)
	}
	n, _, errno := unix.Syscall6(trap, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(args)), size)
	runtime.KeepAlive(buf)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

func listxattrat(dirfd int, name string, dest []byte) (int, error) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return 0, err
	}
	var buf unsafe.Pointer
	if len(dest) > 0 {
		buf = unsafe.Pointer(&dest[0])
	}
	n, _, errno := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(buf), uintptr(len(dest)), 0)
	runtime.KeepAlive(dest)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
