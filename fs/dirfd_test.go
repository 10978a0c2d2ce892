package fs

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cowfs/cowfs/layers"
	"golang.org/x/sys/unix"
)

// newTestOverlay opens a stack of one lower, an upper and a work dir, and the overlay
// over it (not mounted: its root node is enough to lend the upper root's fd).
func newTestOverlay(t *testing.T) *overlayFS {
	t.Helper()
	dir := t.TempDir()
	opts := layers.Options{Lowers: []string{filepath.Join(dir, "lower")}, Upper: filepath.Join(dir, "upper"),
		Work: filepath.Join(dir, "work")}
	for _, d := range []string{opts.Lowers[0], opts.Upper, opts.Work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	stack, err := layers.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	o, err := newOverlayFS(stack)
	if err != nil {
		stack.Close()
		t.Fatal(err)
	}
	t.Cleanup(o.close)
	return o
}

func fdOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

func TestUpperDirFdIsKeptUntilADirectoryChanges(t *testing.T) {
	tests := []struct {
		name string
		// between runs between the first upperFD (released) and the second.
		between func(o *overlayFS)
		reused  bool
	}{
		{name: "the fd of an unchanged directory is lent again", between: func(*overlayFS) {}, reused: true},
		{name: "a directory removed or moved anywhere makes the next request open it again",
			between: func(o *overlayFS) { o.dirChanging() }},
		{name: "the kernel forgetting the node closes it",
			between: func(o *overlayFS) { o.root.OnForget() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := newTestOverlay(t)
			fd1, rel, release, errno := o.root.upperFD()
			if errno != 0 || rel != "" {
				t.Fatalf("upperFD = %d, %q, %v", fd1, rel, errno)
			}
			release()
			kept := o.root.ds.upDir.Load()
			if kept == nil || kept.fd != fd1 || !fdOpen(fd1) {
				t.Fatal("the first fd was not kept")
			}
			tc.between(o)
			_, _, release2, errno := o.root.upperFD()
			if errno != 0 {
				t.Fatal(errno)
			}
			defer release2()
			if got := o.root.ds.upDir.Load() == kept; got != tc.reused {
				t.Errorf("the second request was lent the first fd: %v, want %v", got, tc.reused)
			}
			if closed := kept.refs.Load() == 0; closed == tc.reused {
				t.Errorf("the first fd closed: %v, want %v", closed, !tc.reused)
			}
		})
	}
}

// An fd opened while a RENAME or RMDIR is in progress serves its request only.
func TestUpperDirFdOpenedDuringADirectoryChangeIsNotKept(t *testing.T) {
	o := newTestOverlay(t)
	o.dirOps.Add(1)
	fd, _, release, errno := o.root.upperFD()
	if errno != 0 {
		t.Fatal(errno)
	}
	if o.root.ds.upDir.Load() != nil {
		t.Error("an fd opened during a directory change was kept")
	}
	release()
	if fdOpen(fd) {
		t.Error("the fd of the request alone is still open after its release")
	}
	o.dirOps.Add(-1)
}

// A kept fd dropped while a request still uses it stays open until that request is done.
func TestUpperDirFdOutlivesItsNodeWhileLent(t *testing.T) {
	o := newTestOverlay(t)
	fd, _, release, errno := o.root.upperFD()
	if errno != 0 {
		t.Fatal(errno)
	}
	o.root.dropUpperFD(nil)
	if !fdOpen(fd) {
		t.Fatal("the fd was closed while lent")
	}
	release()
	if fdOpen(fd) {
		t.Error("the fd is still open after its node and its request let go")
	}
}

// The ring keeps at most its size of fds: each new one takes the oldest's place.
func TestDirRingLetsTheOldestGo(t *testing.T) {
	o := newTestOverlay(t)
	o.dirRing = newDirRing(2, func(n *node) { n.dropUpperFD(nil) })
	nodes := []*node{{ofs: o, ds: o.newDirState()}, {ofs: o, ds: o.newDirState()}, {ofs: o, ds: o.newDirState()}}
	var fds []*dirFD
	for _, n := range nodes {
		fd, err := unix.Open(".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		d := newDirFD(fd, 0, 1)
		n.ds.upDir.Store(d)
		fds = append(fds, d)
		if old := o.dirRing.add(n); old != nil {
			old.dropUpperFD(nil)
		}
	}
	if nodes[0].ds.upDir.Load() != nil || fdOpen(fds[0].fd) {
		t.Error("the oldest node still keeps its fd")
	}
	for i := 1; i < 3; i++ {
		if nodes[i].ds.upDir.Load() == nil || !fdOpen(fds[i].fd) {
			t.Errorf("node %d lost its fd", i)
		}
	}
}
