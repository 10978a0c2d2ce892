package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// A copy-up that cannot finish must hold up nothing but itself (issue 5: "two processes
// working in different directories never wait on each other"). The lower layer is a
// small FUSE filesystem served by this test, whose file a/big answers no read until the
// test lets it: a process opening a/big for writing starts its copy-up and stays in it.
// Meanwhile every operation below, in a/ itself and elsewhere, copy-ups of other files
// included, must finish; then the held copy-up is let go and must bring the data whole.
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
		for _, o := range heldCopyUpOps {
			done := make(chan error, 1)
			go func() { done <- o.op(m.dir) }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s, while a/big's copy-up was held: %v", o.name, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: still waiting 10 s into a/big's held copy-up", o.name)
			}
		}
		select {
		case err := <-opened:
			t.Fatalf("a/big's copy-up ended (%v) while its lower read was held", err)
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
// small) and b/ (files other and data). Reads of a/big wait until release.
type gatedLower struct {
	reading chan struct{} // closed at the first read of a/big
	gate    chan struct{} // closed by release
	once    sync.Once
}

func (g *gatedLower) release() { g.once.Do(func() { close(g.gate) }) }

// newGatedLower serves a gatedLower at dir until the test ends.
func newGatedLower(t *testing.T, dir string, big []byte) *gatedLower {
	t.Helper()
	g := &gatedLower{reading: make(chan struct{}), gate: make(chan struct{})}
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
			return &gofs.MemRegularFile{Data: []byte(data), Attr: fuse.Attr{Mode: 0o644}}
		}
		a, b := mkdir(&r.Inode, "a"), mkdir(&r.Inode, "b")
		file(a, "big", &gatedFile{MemRegularFile: gofs.MemRegularFile{Data: big, Attr: fuse.Attr{Mode: 0o644}}, g: g})
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

// gatedDir is a directory of the gated lower; the root's build adds the tree.
type gatedDir struct {
	gofs.Inode
	build func(context.Context, *gatedDir)
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
