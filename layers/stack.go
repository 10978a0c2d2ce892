package layers

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cowfs/cowfs/internal/sysx"
	"github.com/cowfs/cowfs/whiteout"
	"golang.org/x/sys/unix"
)

// Upper is the index of the upper layer in Stack.Layers when the stack is writable.
const Upper = 0

// Layer is one opened layer directory.
type Layer struct {
	// Index is the position in Stack.Layers: the upper (if any) is 0, lowers follow top-down.
	Index int
	// Path is the directory as given on the command line.
	Path string
	// Root is an O_PATH directory fd of the layer root, held for the mount's lifetime;
	// every access to layer content is relative to it (never a path string).
	Root int
	// Dev is the layer root's st_dev; DevIndex numbers the distinct devices of the stack.
	Dev      uint64
	DevIndex int
	// Override is the stat override xattr this layer's objects carry (see
	// override.go), found on its root at mount; "" when it has none.
	Override string
}

// Stack is the opened layers of one mount.
type Stack struct {
	// Layers lists the upper first (when writable), then the lowers top-down.
	Layers []*Layer
	// Writable: Layers[0] is the upper layer.
	Writable bool
	// Work is an O_PATH fd of WORKDIR/work, the scratch directory (same filesystem as the
	// upper) where copy-ups and whiteouts are built before being renamed into place.
	Work int
	// lock is WORKDIR opened and flock()ed for the mount's lifetime: a second mount of the
	// same upper and work would corrupt both (kernel overlayfs refuses it too).
	lock int
	// Format is how markers are written (probed in the work dir).
	Format whiteout.Format
	// SameDev: every layer is on one filesystem, so real inode numbers are unique.
	SameDev bool
	// Opts are the options the stack was opened with.
	Opts Options
}

// WorkSubdir is the work directory's subdirectory cowfs (like kernel overlayfs) uses.
const WorkSubdir = "work"

// Open opens every layer of o (which Check has validated), prepares the work directory
// (creating WORKDIR/work and emptying what a crash left there), and probes the format.
func Open(o Options) (*Stack, error) {
	s := &Stack{Opts: o, Work: -1, lock: -1}
	var paths []string
	if o.Upper != "" && !o.ReadOnly {
		paths = append(paths, o.Upper)
		s.Writable = true
	}
	paths = append(paths, o.Lowers...)
	devs := map[uint64]int{}
	for i, p := range paths {
		fd, err := openRoot(p, !s.Writable || i != Upper)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("open layer %q: %w", p, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			s.Close()
			return nil, fmt.Errorf("stat layer %q: %w", p, err)
		}
		di, ok := devs[st.Dev]
		if !ok {
			di = len(devs)
			devs[st.Dev] = di
		}
		s.Layers = append(s.Layers, &Layer{Index: i, Path: p, Root: fd, Dev: st.Dev, DevIndex: di})
	}
	s.SameDev = len(devs) == 1
	if s.Writable {
		if err := s.openWork(); err != nil {
			s.Close()
			return nil, err
		}
	}
	if err := s.detectOverrides(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Stack) openWork() error {
	base := s.Opts.Work
	if err := os.Mkdir(filepath.Join(base, WorkSubdir), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create work dir: %w", err)
	}
	basefd, err := unix.Open(base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open workdir %q: %w", base, err)
	}
	if err := unix.Flock(basefd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(basefd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("workdir %q is in use by another mount: %w", base, unix.EBUSY)
		}
		return fmt.Errorf("lock workdir %q: %w", base, err)
	}
	s.lock = basefd
	s.Work, err = sysx.OpenBeneath(basefd, WorkSubdir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("open work dir %q: %w", filepath.Join(base, WorkSubdir), err)
	}
	if err := ClearDir(s.Work); err != nil {
		return fmt.Errorf("clean work dir: %w", err)
	}
	var force []string
	if v := os.Getenv(whiteout.ForceEnv); v != "" {
		force = strings.Split(v, ",")
	}
	s.Format, err = whiteout.Probe(s.Work, force...)
	return err
}

// Close releases the layer fds.
func (s *Stack) Close() {
	for _, l := range s.Layers {
		unix.Close(l.Root)
	}
	s.Layers = nil
	if s.Work >= 0 {
		unix.Close(s.Work)
		s.Work = -1
	}
	if s.lock >= 0 {
		unix.Close(s.lock)
		s.lock = -1
	}
}

// openRoot opens a layer directory for Layer.Root. A lower layer's is, where the
// process may, a detached copy of its mount without the mounts below it (what kernel
// overlayfs makes of each layer, clone_private_mount): a filesystem mounted on a
// directory inside the layer then stays out of the merged view, and the directory it
// covers shows, as on the kernel. Where the process may not (no CAP_SYS_ADMIN over its
// mount namespace: EPERM; a mount below that its user namespace may not uncover:
// EINVAL), the layer is opened as it is, and such mounts show through. The upper layer
// is always opened as it is: its copy-ups are renamed in from the work directory, which
// must be on the same mount.
func openRoot(p string, lower bool) (int, error) {
	if lower {
		fd, err := unix.OpenTree(unix.AT_FDCWD, p, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		if err == nil {
			var st unix.Stat_t
			switch err := unix.Fstat(fd, &st); {
			case err != nil:
				unix.Close(fd)
				return -1, err
			case st.Mode&unix.S_IFMT != unix.S_IFDIR:
				unix.Close(fd)
				return -1, unix.ENOTDIR
			}
			return fd, nil
		}
	}
	return unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// Lower reports whether layer index i is a read-only layer.
func (s *Stack) Lower(i int) bool { return !s.Writable || i != Upper }

// OpenDir opens the directory at rel in layer i as an O_PATH fd, never following symlinks.
func (s *Stack) OpenDir(i int, rel string) (int, error) {
	return sysx.OpenBeneath(s.Layers[i].Root, rel, unix.O_PATH|unix.O_DIRECTORY, 0)
}

// OpenParent opens the parent directory of rel in layer i and returns it with the last
// name of rel. For the root (rel == "") it returns the root itself and name "".
func (s *Stack) OpenParent(i int, rel string) (int, string, error) {
	dir, name := sysx.Split(rel)
	fd, err := s.OpenDir(i, dir)
	return fd, name, err
}

// ClearDir removes everything inside the directory dirfd (never following symlinks).
func ClearDir(dirfd int) error {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), "dir")
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := RemoveAt(dirfd, n); err != nil {
			return err
		}
	}
	return nil
}

// RemoveAt removes name in dirfd, recursively if it is a directory.
func RemoveAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return err
	}
	sub, err := sysx.OpenBeneath(dirfd, name, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	err = ClearDir(sub)
	unix.Close(sub)
	if err != nil {
		return err
	}
	return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}

// TempName returns a fresh name for a scratch entry in the work dir.
func TempName(seq uint64) string {
	return "#cowfs" + strconv.FormatUint(seq, 16)
}
