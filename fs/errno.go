package fs

import (
	"errors"
	"syscall"
)

// toErrno is the one place where errors from the inner packages become the errno FUSE
// replies with (go-fuse requires syscall.Errno; fs.ToErrno explains why).
//
// ENOSYS becomes EOPNOTSUPP: to the kernel, an ENOSYS reply means "this daemon does not
// implement the request", and it stops sending that kind of request for the rest of the
// mount (fc->no_getxattr, no_setxattr, no_fallocate...), answering EOPNOTSUPP itself. A
// system call of the daemon's can fail with ENOSYS where cowfs does implement the
// request: a container's seccomp profile answers ENOSYS for the calls it does not know
// (containers/common's default), so one such failure would have turned the request
// off for every file of the mount. The replies that mean "not implemented" on purpose
// (OPENDIR, FLUSH; rawfs.go) do not come through here.
func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if errno == syscall.ENOSYS {
			return syscall.EOPNOTSUPP
		}
		return errno
	}
	return syscall.EIO
}
