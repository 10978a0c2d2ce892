package fs

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
)

func TestToErrno(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want syscall.Errno
	}{
		{"no error is no errno", nil, 0},
		{"an errno passes through", syscall.ENOENT, syscall.ENOENT},
		{"a wrapped errno is unwrapped", fmt.Errorf("open layer: %w", syscall.EACCES), syscall.EACCES},
		{"ENOSYS from a system call is EOPNOTSUPP, so the kernel keeps sending the request",
			fmt.Errorf("setxattr: %w", syscall.ENOSYS), syscall.EOPNOTSUPP},
		{"an error without an errno is EIO", errors.New("corrupt layer"), syscall.EIO},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := toErrno(tc.err); got != tc.want {
				t.Errorf("toErrno(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
