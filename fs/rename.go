package fs

import (
	"context"
	"errors"
	"syscall"

	"github.com/cowfs/cowfs/internal/sysx"
	"github.com/cowfs/cowfs/layers"
	"github.com/cowfs/cowfs/lookup"
	"github.com/cowfs/cowfs/whiteout"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// pureUpper: the object lives only in the upper layer (nothing below contributes).
func pureUpper(e lookup.Entry) bool { return len(e.Layers) == 1 && e.Layers[0] == layers.Upper }

func (n *node) child(name string) *node {
	c := n.GetChild(name)
	if c == nil {
		return nil
	}
	cn, _ := c.Operations().(*node)
	return cn
}

var _ = (gofs.NodeRenamer)((*node)(nil))

// Rename follows kernel ovl_rename with redirect_dir off: files are copied up and moved
// in the upper layer, leaving a whiteout where a lower name would show through; a
// directory with lower content cannot move (EXDEV, so tools fall back to copying).
func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	dirs := []*node{n}
	if np, ok := newParent.(*node); ok && np != n {
		dirs = append(dirs, np)
	}
	end := n.ofs.startFlux(ctx, dirs...)
	errno := n.rename(name, newParent, newName, flags)
	end(errno != 0)
	return errno
}

func (n *node) rename(name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	st := n.ofs.stack
	if !st.Writable {
		return syscall.EROFS
	}
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	exchange := flags&unix.RENAME_EXCHANGE != 0
	if flags&^uint32(unix.RENAME_EXCHANGE|unix.RENAME_NOREPLACE) != 0 {
		return syscall.EINVAL
	}
	if whiteout.IsInternalName(newName) {
		return syscall.EINVAL
	}
	orel, se, errno := n.childEntry(name)
	if errno != 0 {
		return errno
	}
	_, de, derr := np.childEntry(newName)
	dstExists := derr == 0
	if derr != 0 && derr != syscall.ENOENT {
		return derr
	}
	if exchange && !dstExists {
		return syscall.ENOENT
	}
	if flags&unix.RENAME_NOREPLACE != 0 && dstExists {
		return syscall.EEXIST
	}
	srcDir, dstDir := se.Mode == unix.S_IFDIR, dstExists && de.Mode == unix.S_IFDIR
	dstBusy := false // an upper-only target directory that is not empty
	if n == np && name == newName {
		return 0
	}
	// A directory with lower content cannot move; checked before emptiness, as
	// ovl_rename checks ovl_can_move first.
	if (srcDir && !pureUpper(se)) || (exchange && dstDir && !pureUpper(de)) {
		return syscall.EXDEV
	}
	if dstExists && !exchange {
		switch {
		case srcDir && !dstDir:
			return syscall.ENOTDIR
		case !srcDir && dstDir:
			return syscall.EISDIR
		case dstDir:
			// The target must be empty in the merged view (markers do not count). A
			// merged one is refused at once; an upper-only one only after the source is
			// marked opaque below, as in ovl_rename, where the upper filesystem's rename
			// is what fails.
			nrel, _ := np.rel()
			ents, _, err := n.ofs.mergedEntries(sysx.Join(nrel, newName), de.Layers, nil)
			if err != nil {
				return toErrno(err)
			}
			if len(ents) > 0 {
				if !pureUpper(de) {
					return syscall.ENOTEMPTY
				}
				dstBusy = true
			}
		}
	}

	// Bring everything involved into the upper layer.
	src := n.child(name)
	var dst *node
	if dstExists {
		dst = np.child(newName)
	}
	if src == nil || (exchange && dst == nil) {
		return syscall.ESTALE
	}
	if errno := src.copyUpInDirOp(); errno != 0 {
		return errno
	}
	if exchange {
		if errno := dst.copyUpInDirOp(); errno != 0 {
			return errno
		}
	}
	if srcDir || dstDir {
		// Upper directories are about to move or go (dirfd.go).
		n.ofs.dirChanging()
	}
	oldUp, _, oldRelease, errno := n.upperDir()
	if errno != 0 {
		return errno
	}
	defer oldRelease()
	newUp, _, newRelease, errno := np.upperDir()
	if errno != 0 {
		return errno
	}
	defer newRelease()

	oldNeedsWhiteout := false
	if !exchange {
		if oldNeedsWhiteout, errno = n.lowerPositive(orel, name); errno != 0 {
			return errno
		}
	}
	kind, err := whiteout.At(newUp, newName)
	if err != nil {
		return toErrno(err)
	}
	// The upper copy of a directory being replaced (empty in the merged view) may still
	// hold whiteouts or markers: move it aside.
	var aside string
	if !exchange && dstDir && !dstBusy && kind == whiteout.Entry && srcDir {
		aside = n.ofs.cp.TempName()
		if err := unix.Renameat(newUp, newName, st.Work, aside); err != nil {
			return toErrno(err)
		}
		kind = whiteout.None
	}
	restore := func() {
		if aside != "" {
			unix.Renameat2(st.Work, aside, newUp, newName, unix.RENAME_NOREPLACE)
		}
	}
	// A directory moved into a merged directory must not merge with what lies below its
	// new name (kernel: ovl_set_opaque_xerr in ovl_rename).
	if srcDir && len(np.getLayers()) > 1 {
		if err := st.Format.SetOpaque(oldUp, name); err != nil {
			restore()
			return toErrno(err)
		}
	}
	if dstBusy {
		return syscall.ENOTEMPTY
	}
	if exchange && dstDir && len(n.getLayers()) > 1 {
		if err := st.Format.SetOpaque(newUp, newName); err != nil {
			return toErrno(err)
		}
	}

	var rflags uint
	cleanupWhiteout, whiteoutAfter := false, false
	switch {
	case exchange:
		rflags = unix.RENAME_EXCHANGE
	case oldNeedsWhiteout && kind == whiteout.CharWhiteout:
		rflags = unix.RENAME_EXCHANGE // switch whiteouts: the one at new lands at old
	case oldNeedsWhiteout && st.Format.CharDev:
		rflags = unix.RENAME_WHITEOUT
	case oldNeedsWhiteout:
		whiteoutAfter = true
	case srcDir && kind == whiteout.CharWhiteout:
		rflags = unix.RENAME_EXCHANGE // a directory can't replace a device
		cleanupWhiteout = true
	}
	// A file replaced by the rename stays openable for an open that resolved its name
	// before (orphans, flux.go).
	orphan := -1
	if !exchange && dst != nil && dst.StableAttr().Mode&unix.S_IFMT == unix.S_IFREG && dst.top() == layers.Upper {
		orphan, _ = unix.Openat(newUp, newName, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if err := unix.Renameat2(oldUp, name, newUp, newName, rflags); err != nil {
		if rflags == unix.RENAME_WHITEOUT && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EPERM)) {
			err = unix.Renameat2(oldUp, name, newUp, newName, 0)
			whiteoutAfter = err == nil
		}
		if err != nil {
			if orphan >= 0 {
				unix.Close(orphan)
			}
			restore()
			return toErrno(err)
		}
	}
	if orphan >= 0 {
		n.ofs.keepOrphan(dst, orphan)
	}
	if cleanupWhiteout {
		unix.Unlinkat(oldUp, name, 0)
	}
	if whiteoutAfter {
		if err := st.Format.Create(oldUp, name); err != nil {
			return toErrno(err)
		}
	}
	if kind == whiteout.FileWhiteout {
		if srcDir {
			st.Format.SetOpaque(newUp, newName)
		}
		whiteout.Remove(newUp, newName, kind)
	}
	if aside != "" {
		layers.RemoveAt(st.Work, aside)
	}
	n.changed()
	np.changed()
	src.changed()
	if exchange {
		dst.changed()
	}
	return 0
}
