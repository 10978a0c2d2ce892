package fs

import (
	"context"
	"syscall"
	"time"

	"github.com/cowfs/cowfs/internal/sysx"
	"github.com/cowfs/cowfs/whiteout"
	gofs "github.com/hanwen/go-fuse/v2/fs"
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
	dirfd, name, release, err := n.parentDir(n.top(), rel)
	if err != nil {
		return toErrno(err)
	}
	defer release()
	return toErrno(fn(dirfd, name))
}

// noXattrs is the cache of every object without attributes (most of them): one
// shared empty map rather than one per node, never written to (the cache is replaced,
// never changed in place).
var noXattrs = map[string][]byte{}

// loadXattrs returns the topmost copy's attributes under their stored names, from the
// node's cache or the layer.
func (n *node) loadXattrs() (map[string][]byte, syscall.Errno) {
	n.mu.Lock()
	x, gen := n.xattrs, n.xattrGen
	n.mu.Unlock()
	if x != nil {
		return x, 0
	}
	n.ofs.xattrsAsked.Store(time.Now().UnixNano())
	errno := n.xattrAt(func(dirfd int, name string) error {
		var err error
		x, err = readXattrs(dirfd, name)
		return err
	})
	if errno != 0 {
		return nil, errno
	}
	n.keepXattrs(x, gen)
	return x, 0
}

// preloadXattrs reads the attributes of a node just looked up (its topmost copy is name
// in dirfd) while the kernel is asking for attributes: `ls -l` asks for one or two of
// every file it lists, and reading them now, through the directory fd the lookup has
// open, costs one listxattr instead of an openat2, a listxattr and a close later. A
// walk that asks for none (find, tar) does not pay for it.
func (n *node) preloadXattrs(dirfd int, name string) {
	if time.Now().UnixNano()-n.ofs.xattrsAsked.Load() > int64(xattrsAskedFor) {
		return
	}
	n.mu.Lock()
	loaded, gen := n.xattrs != nil, n.xattrGen
	n.mu.Unlock()
	if loaded {
		return
	}
	if x, err := readXattrs(dirfd, name); err == nil {
		n.keepXattrs(x, gen)
	}
}

// xattrsAskedFor is how long after the daemon last had to read an object's attributes
// for the kernel that lookups read them ahead (preloadXattrs).
const xattrsAskedFor = 2 * time.Second

// keepXattrs caches x unless the attributes changed since generation gen was read.
func (n *node) keepXattrs(x map[string][]byte, gen uint32) {
	n.mu.Lock()
	if n.xattrGen == gen && n.xattrs == nil {
		n.xattrs = x
	}
	n.mu.Unlock()
}

// readXattrs reads every attribute of entry name in dirfd.
func readXattrs(dirfd int, name string) (map[string][]byte, error) {
	x := noXattrs
	names, err := sysx.Listxattr(dirfd, name)
	if err != nil {
		if sysx.IsNoData(err) {
			return x, nil // no xattr support on this layer: none
		}
		return nil, err
	}
	if len(names) > 0 {
		x = make(map[string][]byte, len(names))
	}
	for _, a := range names {
		v, err := sysx.Getxattr(dirfd, name, a)
		if err != nil {
			if sysx.IsNoData(err) {
				continue
			}
			return nil, err
		}
		x[a] = v
	}
	return x, nil
}

func (n *node) dropXattrs() {
	n.mu.Lock()
	n.xattrs = nil
	n.xattrGen++
	n.mu.Unlock()
}

// selinuxXattr is SELinux's label. The kernel sends a getxattr of it to the daemon only
// where no security module answers for it, that is where SELinux does not run.
const selinuxXattr = "security.selinux"

// Getxattr reads an attribute of the topmost copy. Overlay markers are not attributes
// of the merged object: a user's name in a marker namespace is stored escaped.
//
// An object without an SELinux label answers EOPNOTSUPP where SELinux does not run
// (unless selinux_enodata): `ls -l` reads every file's label, which FUSE does not
// cache, and stops asking for a filesystem that answers EOPNOTSUPP (coreutils caches
// it by device). A label a layer stores still reads back.
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	x, errno := n.loadXattrs()
	if errno != 0 {
		return 0, errno
	}
	v, ok := x[whiteout.StoredXattr(attr)]
	if !ok {
		if attr == selinuxXattr && n.ofs.selinuxUnsupported {
			return 0, syscall.EOPNOTSUPP
		}
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

// Listxattr lists the topmost copy's attributes, without overlay markers.
func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	x, errno := n.loadXattrs()
	if errno != 0 {
		return 0, errno
	}
	var buf []byte
	for a := range x {
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

// Setxattr copies the object up (its metadata only on a metacopy=on mount) and sets the
// attribute there.
func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	attr = whiteout.StoredXattr(attr)
	if errno := n.copyUpMeta(); errno != 0 {
		return errno
	}
	defer n.dropXattrs()
	return n.xattrAt(func(dirfd int, name string) error {
		return sysx.Setxattr(dirfd, name, attr, data, int(flags))
	})
}

// Removexattr removes the attribute from the upper copy; removing one the object does
// not have is ENODATA and copies nothing up (kernel ovl_xattr_set).
func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	attr = whiteout.StoredXattr(attr)
	if !n.isUpper() {
		x, errno := n.loadXattrs()
		if errno != 0 {
			return errno
		}
		if _, ok := x[attr]; !ok {
			return syscall.ENODATA
		}
	}
	if errno := n.copyUpMeta(); errno != 0 {
		return errno
	}
	defer n.dropXattrs()
	return n.xattrAt(func(dirfd int, name string) error {
		return sysx.Removexattr(dirfd, name, attr)
	})
}
