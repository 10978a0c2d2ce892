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
	// The opened layers: the first few in small (most directories a lookup goes
	// through are in a few layers), the rest in more. A map for all of them was 5.5 of
	// the 51 MB a chmod of 5,000 lower files allocated (a DirFds a LOOKUP).
	small  [4]openDir
	nsmall int
	more   map[int]openDir
	open   Opener // nil: Stack.OpenDir
}

// An Opener opens the copy in layer li of the directory at rel for a DirFds, which calls
// release (when not nil) instead of closing fd at Close: it lets a caller lend a
// directory fd it keeps open anyway.
type Opener interface {
	OpenLayerDir(li int, rel string) (fd int, release func(), err error)
}

type openDir struct {
	li      int // the layer
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
	if o := d.find(li); o != nil {
		return o.fd, o.err
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
	o := openDir{li: li, fd: fd, release: release, err: err}
	if d.nsmall < len(d.small) {
		d.small[d.nsmall] = o
		d.nsmall++
	} else {
		if d.more == nil {
			d.more = make(map[int]openDir)
		}
		d.more[li] = o
	}
	return fd, err
}

// find is the entry of layer li, nil when it was not opened. The pointer is good until
// the next Get.
func (d *DirFds) find(li int) *openDir {
	for i := range d.nsmall {
		if d.small[i].li == li {
			return &d.small[i]
		}
	}
	if o, ok := d.more[li]; ok {
		return &o // a copy: entries in more are changed through set
	}
	return nil
}

// set stores o, an entry that find returned (changed).
func (d *DirFds) set(o openDir) {
	for i := range d.nsmall {
		if d.small[i].li == o.li {
			d.small[i] = o
			return
		}
	}
	d.more[o.li] = o
}

// Marks reads the xattr markers of the directory's copy in layer li (opened already)
// once per DirFds: every empty regular file found in it needs them (an xattr whiteout is
// one), and a READDIRPLUS looks up all its names through one DirFds. Only XattrWhiteouts
// is meant to be read from them (whiteout.ReadDirXattrMarks).
func (d *DirFds) Marks(li int) (whiteout.DirMarks, error) {
	p := d.find(li)
	if p == nil || p.err != nil {
		return whiteout.DirMarks{}, fmt.Errorf("layer %d %q: not open", li, d.rel)
	}
	o := *p
	if !o.marksRead {
		m, err := whiteout.ReadDirXattrMarks(o.fd, "")
		if err != nil {
			return m, err
		}
		o.marks, o.marksRead = m, true
		d.set(o)
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
	closeOne := func(o openDir) {
		switch {
		case o.release != nil:
			o.release()
		case o.fd >= 0:
			unix.Close(o.fd)
		}
	}
	for i := range d.nsmall {
		closeOne(d.small[i])
		d.small[i] = openDir{}
	}
	d.nsmall = 0
	for _, o := range d.more {
		closeOne(o)
	}
	d.more = nil
}
