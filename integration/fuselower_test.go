package integration

// Cases over a lower layer that is a FUSE filesystem served by the test itself
// (gatedLower), which can hold a read or a lookup, and count listings.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// A copy-up or a lookup that cannot finish must hold up nothing but itself (issue 5:
// "two processes working in different directories never wait on each other"). The lower
// layer is a small FUSE filesystem served by this test, where the file a/big answers no
// read, and the name c/hang no lookup, until the test lets them: a process opening a/big
// for writing starts its copy-up and stays in it, and a process stat'ing c/hang stays in
// its lookup (a lower layer on a network filesystem that stopped answering). Meanwhile
// every operation below, in a/ and c/ themselves and elsewhere, copy-ups of other files
// included, must finish; then the held copy-up and lookup are let go and must end right.
// Kernel overlayfs runs the same case first, as the reference; cowfs also with
// GOMAXPROCS=1 (forEachSetting).

// heldCopyUpOps are what other processes do while a/big's copy-up is held.
var heldCopyUpOps = []struct {
	name string
	op   func(mnt string) error
}{
	{"another directory: create, write and fsync a new file", func(mnt string) error {
		return writeSync(filepath.Join(mnt, "b/new"), "new")
	}},
	{"another directory: rename and unlink", func(mnt string) error {
		if err := os.Rename(filepath.Join(mnt, "b/new"), filepath.Join(mnt, "b/renamed")); err != nil {
			return err
		}
		return os.Remove(filepath.Join(mnt, "b/renamed"))
	}},
	{"another directory: copy-up of a lower file (chmod)", func(mnt string) error {
		return os.Chmod(filepath.Join(mnt, "b/other"), 0o600)
	}},
	{"another directory: copy-up of a lower file's data (open for write)", func(mnt string) error {
		return appendTo(filepath.Join(mnt, "b/data"), "+")
	}},
	{"another directory: mkdir, list and rmdir", func(mnt string) error {
		d := filepath.Join(mnt, "b/dir")
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
		if _, err := os.ReadDir(filepath.Join(mnt, "b")); err != nil {
			return err
		}
		return os.Remove(d)
	}},
	{"the root: list", func(mnt string) error {
		_, err := os.ReadDir(mnt)
		return err
	}},
	{"the same directory: list and stat another file", func(mnt string) error {
		if _, err := os.ReadDir(filepath.Join(mnt, "a")); err != nil {
			return err
		}
		_, err := os.Lstat(filepath.Join(mnt, "a/small"))
		return err
	}},
	{"the same directory: create and remove a new file", func(mnt string) error {
		p := filepath.Join(mnt, "a/new")
		if err := writeSync(p, "new"); err != nil {
			return err
		}
		return os.Remove(p)
	}},
	{"the file being copied up: stat and list its xattrs", func(mnt string) error {
		p := filepath.Join(mnt, "a/big")
		if _, err := os.Lstat(p); err != nil {
			return err
		}
		_, err := unix.Llistxattr(p, make([]byte, 4096))
		if errors.Is(err, unix.EOPNOTSUPP) {
			err = nil // the gated lower has no xattrs to list
		}
		return err
	}},
	{"the directory of the held lookup: stat and read another name", func(mnt string) error {
		got, err := os.ReadFile(filepath.Join(mnt, "c/other"))
		if err == nil && string(got) != "c/other" {
			err = fmt.Errorf("read %q", got)
		}
		return err
	}},
	{"the same directory: copy-up of another lower file's data", func(mnt string) error {
		return appendTo(filepath.Join(mnt, "a/small"), "+")
	}},
}

func TestHeldCopyUpHoldsUpNoOneElse(t *testing.T) {
	forEachSetting(t, func(t *testing.T, kind mountKind) {
		m := newTestMount(t, kind, layer{}, layer{})
		// The empty lower0 becomes the mountpoint of the gated lower.
		m.unmount()
		big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
		lower := newGatedLower(t, m.lowers[0], big)
		m.mount()
		t.Cleanup(func() {
			lower.release() // a held copy-up would keep the overlay busy
			m.unmount()     // before the lower it reads goes
		})

		opened := make(chan error, 1)
		go func() { opened <- appendTo(filepath.Join(m.dir, "a/big"), "+") }()
		select {
		case <-lower.reading:
		case err := <-opened:
			t.Fatalf("the open of a/big for writing returned (%v) without reading the lower file", err)
		case <-time.After(20 * time.Second):
			t.Fatal("the open of a/big for writing did not start its copy-up within 20 s")
		}
		looked := make(chan error, 1)
		go func() {
			_, err := os.Lstat(filepath.Join(m.dir, "c/hang"))
			looked <- err
		}()
		select {
		case <-lower.lookingUp:
		case err := <-looked:
			t.Fatalf("stat of c/hang returned (%v) without looking it up in the lower layer", err)
		case <-time.After(20 * time.Second):
			t.Fatal("stat of c/hang did not reach the lower layer within 20 s")
		}
		for _, o := range heldCopyUpOps {
			done := make(chan error, 1)
			go func() { done <- o.op(m.dir) }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s, while a/big's copy-up was held: %v", o.name, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: still waiting 10 s into a/big's held copy-up and c/hang's held lookup", o.name)
			}
		}
		select {
		case err := <-opened:
			t.Fatalf("a/big's copy-up ended (%v) while its lower read was held", err)
		case err := <-looked:
			t.Fatalf("c/hang's lookup ended (%v) while the lower's was held", err)
		default:
		}
		lower.release()
		select {
		case err := <-opened:
			if err != nil {
				t.Fatalf("open of a/big for writing after its lower read was let go: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("a/big's copy-up did not end within 20 s of its lower read being let go")
		}
		select {
		case err := <-looked:
			if !errors.Is(err, os.ErrNotExist) {
				t.Errorf("stat of c/hang after its lower lookup was let go: %v; want ENOENT", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("c/hang's lookup did not end within 20 s of the lower's being let go")
		}
		got, err := os.ReadFile(filepath.Join(m.upper, "a/big"))
		if err != nil {
			t.Fatal(err)
		}
		if want := append(bytes.Clone(big), '+'); !bytes.Equal(got, want) {
			t.Fatalf("the upper a/big: %d bytes, equal to the lower's plus '+': %v", len(got), bytes.Equal(got, want))
		}
		for _, name := range []string{"a/small", "b/data"} {
			if got, err := os.ReadFile(filepath.Join(m.dir, name)); err != nil || string(got) != name+"+" {
				t.Errorf("%s after its copy-up: %q, %v; want %q", name, got, err, name+"+")
			}
		}
	})
}

// Lookups resolve one name (issue 5: "no whole-directory loading to answer a lookup or a
// stat"): operations on names of a lower directory of 2,000 files, copy-ups and removals
// included, make the daemon list it no time; a listing of it then does (the count works).
// Kernel overlayfs runs first, as the reference.
func TestOneNameOperationsListNoDirectory(t *testing.T) {
	requireMounts(t)
	ops := []struct {
		name string
		op   func(d string) error
	}{
		{"stat of a file", func(d string) error { _, err := os.Lstat(filepath.Join(d, "f1")); return err }},
		{"stat of a name that does not exist", func(d string) error {
			if _, err := os.Lstat(filepath.Join(d, "missing")); !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("got %v, want ENOENT", err)
			}
			return nil
		}},
		{"read of a file", func(d string) error { _, err := os.ReadFile(filepath.Join(d, "f2")); return err }},
		{"chmod of a file (copy-up of it and of the directory)", func(d string) error {
			return os.Chmod(filepath.Join(d, "f3"), 0o600)
		}},
		{"append to a file (data copy-up)", func(d string) error { return appendTo(filepath.Join(d, "f4"), "+") }},
		{"create a file", func(d string) error { return writeSync(filepath.Join(d, "new"), "new") }},
		{"unlink a lower file", func(d string) error { return os.Remove(filepath.Join(d, "f5")) }},
		{"rename a lower file", func(d string) error { return os.Rename(filepath.Join(d, "f6"), filepath.Join(d, "f6b")) }},
		{"hard link a lower file", func(d string) error { return os.Link(filepath.Join(d, "f7"), filepath.Join(d, "f7b")) }},
		{"symlink and mkdir", func(d string) error {
			if err := os.Symlink("f8", filepath.Join(d, "link")); err != nil {
				return err
			}
			return os.Mkdir(filepath.Join(d, "sub"), 0o755)
		}},
		{"set an xattr on a lower file", func(d string) error {
			return unix.Lsetxattr(filepath.Join(d, "f9"), "user.k", []byte("v"), 0)
		}},
		{"create over a removed lower name", func(d string) error { return writeSync(filepath.Join(d, "f5"), "again") }},
	}
	for _, kind := range []mountKind{kernelKind, fuseKind} {
		t.Run(string(kind), func(t *testing.T) {
			m := newTestMount(t, kind, layer{}, layer{})
			m.unmount() // the empty lower0 becomes the mountpoint of the gated lower
			lower := newGatedLower(t, m.lowers[0], nil)
			m.mount()
			t.Cleanup(m.unmount) // before the lower goes
			d := filepath.Join(m.dir, "many")
			for _, o := range ops {
				if err := o.op(d); err != nil {
					t.Errorf("%s: %v", o.name, err)
				}
				if n := lower.listings.Swap(0); n != 0 {
					t.Errorf("%s: the lower directory was listed %d times", o.name, n)
				}
			}
			names, err := os.ReadDir(d)
			if err != nil {
				t.Fatal(err)
			}
			// 2,000 lower files, less f5 (recreated) and f6 (renamed), plus f6b, f7b, link,
			// new and sub.
			if len(names) != 2000+4 || lower.listings.Load() == 0 {
				t.Errorf("a listing: %d names, %d listings of the lower directory; want 2004 names and some listings",
					len(names), lower.listings.Load())
			}
		})
	}
}

func writeSync(path, data string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func appendTo(path, data string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// gatedLower is a FUSE filesystem for a lower layer: directories a/ (files big and
// small), b/ (files other and data), c/ (file other) and many/ (files f0 to f1999).
// Reads of a/big, and lookups of c/hang (which does not exist), wait until release;
// listings of many/ are counted.
type gatedLower struct {
	listings  atomic.Int32  // READDIRs of many/
	reading   chan struct{} // closed at the first read of a/big
	lookingUp chan struct{} // closed at the first lookup of c/hang
	gate      chan struct{} // closed by release
	once      sync.Once
}

func (g *gatedLower) release() { g.once.Do(func() { close(g.gate) }) }

// newGatedLower serves a gatedLower at dir until the test ends.
func newGatedLower(t *testing.T, dir string, big []byte) *gatedLower {
	t.Helper()
	g := &gatedLower{reading: make(chan struct{}), lookingUp: make(chan struct{}), gate: make(chan struct{})}
	root := &gatedDir{build: func(ctx context.Context, r *gatedDir) {
		mkdir := func(parent *gofs.Inode, name string) *gofs.Inode {
			d := parent.NewPersistentInode(ctx, &gatedDir{}, gofs.StableAttr{Mode: fuse.S_IFDIR})
			parent.AddChild(name, d, false)
			return d
		}
		file := func(parent *gofs.Inode, name string, node gofs.InodeEmbedder) {
			parent.AddChild(name, parent.NewPersistentInode(ctx, node, gofs.StableAttr{}), false)
		}
		plain := func(data string) *gofs.MemRegularFile {
			return &gofs.MemRegularFile{Data: []byte(data), Attr: fuse.Attr{Mode: 0o644, Nlink: 1}}
		}
		a, b := mkdir(&r.Inode, "a"), mkdir(&r.Inode, "b")
		c := &gatedDir{hang: g}
		r.AddChild("c", r.NewPersistentInode(ctx, c, gofs.StableAttr{Mode: fuse.S_IFDIR}), false)
		file(&c.Inode, "other", plain("c/other"))
		many := &gatedDir{listings: &g.listings}
		r.AddChild("many", r.NewPersistentInode(ctx, many, gofs.StableAttr{Mode: fuse.S_IFDIR}), false)
		for i := range 2000 {
			file(&many.Inode, fmt.Sprintf("f%d", i), plain(fmt.Sprintf("many/f%d", i)))
		}
		file(a, "big", &gatedFile{MemRegularFile: gofs.MemRegularFile{Data: big, Attr: fuse.Attr{Mode: 0o644, Nlink: 1}}, g: g})
		file(a, "small", plain("a/small"))
		file(b, "other", plain("b/other"))
		file(b, "data", plain("b/data"))
	}}
	server, err := gofs.Mount(dir, root, &gofs.Options{MountOptions: fuse.MountOptions{
		DirectMount: true, FsName: "gatedlower", Name: "gatedlower", AllowOther: true,
	}})
	if err != nil {
		t.Fatalf("mount the gated lower layer at %s: %v", dir, err)
	}
	t.Cleanup(func() {
		g.release()
		if err := server.Unmount(); err != nil {
			t.Errorf("unmount the gated lower layer: %v", err)
			detach(dir)
		}
	})
	return g
}

// gatedDir is a directory of the gated lower; the root's build adds the tree. In the
// one with hang set, a lookup of "hang" waits for the gate, then fails with ENOENT.
type gatedDir struct {
	gofs.Inode
	build func(context.Context, *gatedDir)
	hang  *gatedLower
	once  sync.Once
	// listings counts this directory's READDIRs (nil: not counted).
	listings *atomic.Int32
}

var _ = (gofs.NodeReaddirer)((*gatedDir)(nil))

func (d *gatedDir) Readdir(context.Context) (gofs.DirStream, syscall.Errno) {
	if d.listings != nil {
		d.listings.Add(1)
	}
	var list []fuse.DirEntry
	for name, ch := range d.Children() {
		list = append(list, fuse.DirEntry{Name: name, Mode: ch.Mode(), Ino: ch.StableAttr().Ino})
	}
	return gofs.NewListDirStream(list), 0
}

var _ = (gofs.NodeLookuper)((*gatedDir)(nil))

func (d *gatedDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if d.hang != nil && name == "hang" {
		d.once.Do(func() { close(d.hang.lookingUp) })
		select {
		case <-d.hang.gate:
		case <-ctx.Done():
			return nil, syscall.EINTR
		}
		return nil, syscall.ENOENT
	}
	ch := d.GetChild(name)
	if ch == nil {
		return nil, syscall.ENOENT
	}
	if ga, ok := ch.Operations().(gofs.NodeGetattrer); ok {
		var a fuse.AttrOut
		if errno := ga.Getattr(ctx, nil, &a); errno != 0 {
			return nil, errno
		}
		out.Attr = a.Attr
	}
	return ch, 0
}

var _ = (gofs.NodeOnAdder)((*gatedDir)(nil))
var _ = (gofs.NodeGetattrer)((*gatedDir)(nil))

func (d *gatedDir) OnAdd(ctx context.Context) {
	if d.build != nil {
		d.build(ctx, d)
	}
}

func (d *gatedDir) Getattr(_ context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = fuse.S_IFDIR | 0o755
	return 0
}

// gatedFile is a/big: its reads wait for the gate.
type gatedFile struct {
	gofs.MemRegularFile
	g       *gatedLower
	started sync.Once
}

var _ = (gofs.NodeReader)((*gatedFile)(nil))

func (f *gatedFile) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f.started.Do(func() { close(f.g.reading) })
	select {
	case <-f.g.gate:
	case <-ctx.Done():
		return nil, syscall.EINTR
	}
	return f.MemRegularFile.Read(ctx, fh, dest, off)
}

func (f *gatedFile) String() string { return fmt.Sprintf("gated file of %d bytes", len(f.Data)) }
