package fs

import (
	"errors"
	"syscall"
)

// toErrno is the one place where errors from the inner packages become the errno FUSE
// replies with (go-fuse requires syscall.Errno; fs.ToErrno explains why).
func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return syscall.EIO
}
