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
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return 0, err
	}
	a, err := unix.BytePtrFromString(attr)
	if err != nil {
		return 0, err
	}
	args := xattrArgs{size: uint32(len(dest))}
	if len(dest) > 0 {
		args.value = uint64(uintptr(unsafe.Pointer(&dest[0])))
	}
	n, _, errno := unix.Syscall6(unix.SYS_GETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(&args)),
		unsafe.Sizeof(args))
	runtime.KeepAlive(dest)
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

func setxattrat(dirfd int, name, attr string, data []byte, flags int) error {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	a, err := unix.BytePtrFromString(attr)
	if err != nil {
		return err
	}
	args := xattrArgs{size: uint32(len(data)), flags: uint32(flags)}
	if len(data) > 0 {
		args.value = uint64(uintptr(unsafe.Pointer(&data[0])))
	}
	_, _, errno := unix.Syscall6(unix.SYS_SETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(&args)),
		unsafe.Sizeof(args))
	runtime.KeepAlive(data)
	if errno != 0 {
		return errno
	}
	return nil
}

func removexattrat(dirfd int, name, attr string) error {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	a, err := unix.BytePtrFromString(attr)
	if err != nil {
		return err
	}
	_, _, errno := unix.Syscall6(unix.SYS_REMOVEXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(a)), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
