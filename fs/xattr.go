package fs

import (
	"context"
	"syscall"

	"github.com/cowfs/cowfs/internal/sysx"
	"github.com/cowfs/cowfs/whiteout"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

var (
	_ = (gofs.NodeGetxattrer)((*node)(nil))
	_ = (gofs.NodeSetxattrer)((*node)(nil))
	_ = (gofs.NodeRemovexattrer)((*node)(nil))
	_ = (gofs.NodeListxattrer)((*node)(nil))
)

// xattrAt runs fn on the object's topmost copy, named as (parent fd, name).
func (n *node) xattrAt(fn func(dirfd int, name string) error) syscall.Errno {
	rel, errno := n.rel()
	if errno != 0 {
		return errno
	}
	dirfd, name, err := n.ofs.stack.OpenParent(n.top(), rel)
	if err != nil {
		return toErrno(err)
	}
	defer unix.Close(dirfd)
	return toErrno(fn(dirfd, name))
}

// Getxattr reads an attribute of the topmost copy. Overlay markers are not attributes
// of the merged object: a user's name in a marker namespace is stored escaped.
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	attr = whiteout.StoredXattr(attr)
	var v []byte
	errno := n.xattrAt(func(dirfd int, name string) error {
		var err error
		v, err = sysx.Getxattr(dirfd, name, attr)
		return err
	})
	if errno != 0 {
		return 0, errno
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

// Listxattr lists the topmost copy's attributes, without overlay markers.
func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var names []string
	errno := n.xattrAt(func(dirfd int, name string) error {
		var err error
		names, err = sysx.Listxattr(dirfd, name)
		return err
	})
	if errno != 0 {
		return 0, errno
	}
	var buf []byte
	for _, a := range names {
		if a, visible := whiteout.UserXattr(a); visible {
			buf = append(buf, a...)
			buf = append(buf, 0)
		}
	}
	if len(dest) < len(buf) {
		return uint32(len(buf)), syscall.ERANGE
	}
	return uint32(copy(dest, buf)), 0
}

// Setxattr copies the object up and sets the attribute there.
func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	attr = whiteout.StoredXattr(attr)
	if errno := n.copyUp(false); errno != 0 {
		return errno
	}
	return n.xattrAt(func(dirfd int, name string) error {
		return sysx.Setxattr(dirfd, name, attr, data, int(flags))
	})
}

// Removexattr removes the attribute from the upper copy; removing one the object does
// not have is ENODATA and copies nothing up (kernel ovl_xattr_set).
func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	attr = whiteout.StoredXattr(attr)
	if !n.isUpper() {
		if errno := n.xattrAt(func(dirfd int, name string) error {
			_, err := sysx.Getxattr(dirfd, name, attr)
			return err
		}); errno != 0 {
			return errno
		}
	}
	if errno := n.copyUp(false); errno != 0 {
		return errno
	}
	return n.xattrAt(func(dirfd int, name string) error {
		return sysx.Removexattr(dirfd, name, attr)
	})
}
