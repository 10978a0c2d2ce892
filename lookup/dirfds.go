package lookup

import (
	"fmt"

	"github.com/cowfs/cowfs/layers"
	"github.com/cowfs/cowfs/whiteout"
	"golang.org/x/sys/unix"
)

// DirFds are one directory's fds in its layers, each opened when first needed and kept
// until Close, so that looking up many names of one directory in a row (the entries of
// a READDIRPLUS) opens each layer's copy once instead of once a name. Not safe for
// concurrent use.
type DirFds struct {
	stack *layers.Stack
	rel   string
	fds   map[int]openDir
	open  Opener // nil: Stack.OpenDir
}

// An Opener opens the copy in layer li of the directory at rel for a DirFds, which calls
// release (when not nil) instead of closing fd at Close: it lets a caller lend a
// directory fd it keeps open anyway.
type Opener interface {
	OpenLayerDir(li int, rel string) (fd int, release func(), err error)
}

type openDir struct {
	fd      int
	release func() // instead of closing fd, when set
	err     error
	// marks are the directory's own markers in this layer, once read (see Marks).
	marks     whiteout.DirMarks
	marksRead bool
}

// NewDirFds prepares fds for the directory rel (relative to every layer root).
func NewDirFds(stack *layers.Stack, rel string) *DirFds {
	return &DirFds{stack: stack, rel: rel}
}

// NewDirFdsWith is NewDirFds whose fds come from open.
func NewDirFdsWith(stack *layers.Stack, rel string, open Opener) *DirFds {
	return &DirFds{stack: stack, rel: rel, open: open}
}

// Get is the directory's fd in layer li (an O_PATH fd; the caller must not close it), or
// the error of opening it.
func (d *DirFds) Get(li int) (int, error) {
	if o, ok := d.fds[li]; ok {
		return o.fd, o.err
	}
	if d.fds == nil {
		d.fds = make(map[int]openDir, len(d.stack.Layers))
	}
	var fd int
	var release func()
	var err error
	if d.open != nil {
		fd, release, err = d.open.OpenLayerDir(li, d.rel)
	} else {
		fd, err = d.stack.OpenDir(li, d.rel)
	}
	if err != nil {
		fd, release = -1, nil
	}
	d.fds[li] = openDir{fd: fd, release: release, err: err}
	return fd, err
}

// Marks reads the xattr markers of the directory's copy in layer li (opened already)
// once per DirFds: every empty regular file found in it needs them (an xattr whiteout is
// one), and a READDIRPLUS looks up all its names through one DirFds. Only XattrWhiteouts
// is meant to be read from them (whiteout.ReadDirXattrMarks).
func (d *DirFds) Marks(li int) (whiteout.DirMarks, error) {
	o, ok := d.fds[li]
	if !ok || o.err != nil {
		return whiteout.DirMarks{}, fmt.Errorf("layer %d %q: not open", li, d.rel)
	}
	if !o.marksRead {
		m, err := whiteout.ReadDirXattrMarks(o.fd, "")
		if err != nil {
			return m, err
		}
		o.marks, o.marksRead = m, true
		d.fds[li] = o
	}
	return o.marks, nil
}

// Stat lstat()s name in the directory's copy in layer li.
func (d *DirFds) Stat(li int, name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := d.Get(li)
	if err != nil {
		return st, err
	}
	err = unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	return st, err
}

// Close closes every fd opened.
func (d *DirFds) Close() {
	for _, o := range d.fds {
		switch {
		case o.release != nil:
			o.release()
		case o.fd >= 0:
			unix.Close(o.fd)
		}
	}
	d.fds = nil
}
