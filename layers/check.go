package layers

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// checkError is a Check failure: one line naming the directory and what is wrong
// with it, wrapping the system error behind it when there is one.
type checkError struct {
	msg string
	err error
}

func (e *checkError) Error() string { return e.msg }
func (e *checkError) Unwrap() error { return e.err }

// dir is one directory of a mount: its role in the messages ("lowerdir"), the path
// as given, and the path with symlinks resolved.
type dir struct {
	role, path, real string
}

// Check validates the options on the real filesystem before anything is mounted:
// every directory exists and is a directory; upperdir and workdir are distinct, on
// one filesystem and writable; no upper or work directory overlaps a lower, each
// other or the mountpoint (after resolving symlinks, as overlayfs does with its
// trap inodes in ovl_check_layer); the workdir holds nothing unusable; and the
// mountpoint is not already mounted on. It also runs Validate.
func (o Options) Check() error {
	if err := o.Validate(); err != nil {
		return err
	}
	lowers := make([]dir, len(o.Lowers))
	for i, l := range o.Lowers {
		d, err := resolveDir("lowerdir", l)
		if err != nil {
			return err
		}
		lowers[i] = d
	}
	var upper, work dir
	if o.Upper != "" {
		var err error
		if upper, err = resolveDir("upperdir", o.Upper); err != nil {
			return err
		}
		if work, err = resolveDir("workdir", o.Work); err != nil {
			return err
		}
	}
	mnt, err := resolveDir("mountpoint", o.Mountpoint)
	if err != nil {
		return err
	}
	if o.Upper != "" {
		if err := checkUpperWork(upper, work, lowers, mnt, o.ReadOnly); err != nil {
			return err
		}
	}
	busy, err := isMountpoint(mnt.real)
	if err != nil {
		return err
	}
	if busy {
		return fmt.Errorf("mountpoint %q is busy: already mounted", mnt.path)
	}
	return nil
}

// checkUpperWork checks everything about the writable pair.
func checkUpperWork(upper, work dir, lowers []dir, mnt dir, readOnly bool) error {
	if upper.real == work.real {
		return fmt.Errorf("upperdir %q and workdir %q are the same directory", upper.path, work.path)
	}
	pairs := [][2]dir{{work, upper}, {upper, mnt}, {work, mnt}}
	for _, l := range lowers {
		pairs = append(pairs, [2]dir{upper, l}, [2]dir{work, l})
	}
	for _, p := range pairs {
		if err := checkOverlap(p[0], p[1]); err != nil {
			return err
		}
	}
	same, err := sameFilesystem(upper.real, work.real)
	if err != nil {
		return err
	}
	if !same {
		return fmt.Errorf("workdir %q is not on the same filesystem as upperdir %q", work.path, upper.path)
	}
	// An earlier mount may have left "work" (kernel overlayfs's OVL_WORKDIR_NAME, for
	// copy-up) and "index" (OVL_INDEXDIR_NAME, with index=on) in the workdir: fine
	// as directories, unusable as anything else.
	for _, name := range []string{"work", "index"} {
		fi, err := os.Lstat(filepath.Join(work.real, name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return &checkError{fmt.Sprintf("workdir %q: %v", work.path, err), err}
		case !fi.IsDir():
			return fmt.Errorf("workdir %q: %q in it is not a directory", work.path, name)
		}
	}
	if readOnly {
		return nil
	}
	for _, d := range []dir{upper, work} {
		if err := writable(d.real); err != nil {
			return &checkError{fmt.Sprintf("%s %q: not writable: %v", d.role, d.path, err), err}
		}
	}
	return nil
}

// checkOverlap fails if a and b are the same directory or one is inside the other.
func checkOverlap(a, b dir) error {
	switch {
	case a.real == b.real:
		return fmt.Errorf("%s %q and %s %q are the same directory", a.role, a.path, b.role, b.path)
	case inside(a.real, b.real):
		return fmt.Errorf("%s %q is inside %s %q", a.role, a.path, b.role, b.path)
	case inside(b.real, a.real):
		return fmt.Errorf("%s %q is inside %s %q", b.role, b.path, a.role, a.path)
	}
	return nil
}

// inside reports whether the clean absolute path p is strictly below dir.
func inside(p, dir string) bool {
	if dir == "/" {
		return p != "/"
	}
	return strings.HasPrefix(p, dir+"/")
}

// resolveDir checks that path is an existing directory and resolves it to an
// absolute path without symlinks.
func resolveDir(role, path string) (dir, error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return dir{}, &checkError{fmt.Sprintf("%s %q: no such directory", role, path), err}
	case err != nil:
		return dir{}, &checkError{fmt.Sprintf("%s %q: %v", role, path, unwrapPath(err)), err}
	case !fi.IsDir():
		return dir{}, fmt.Errorf("%s %q: not a directory", role, path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return dir{}, &checkError{fmt.Sprintf("%s %q: %v", role, path, err), err}
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return dir{}, &checkError{fmt.Sprintf("%s %q: %v", role, path, unwrapPath(err)), err}
	}
	return dir{role: role, path: path, real: real}, nil
}

// unwrapPath returns the system error inside a *fs.PathError, which already
// names the path that the message names.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
