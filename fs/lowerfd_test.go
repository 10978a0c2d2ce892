package fs

import (
	"testing"

	"golang.org/x/sys/unix"
)

// The lower fds a node keeps (lowerfd.go): lent again until the node is forgotten or
// its place in the ring is taken; a listing's are not kept.
func TestLowerDirFdIsKeptUntilTheNodeGoes(t *testing.T) {
	const lower = 1
	tests := []struct {
		name string
		keep bool
		// between runs between the first open (released) and the second.
		between func(o *overlayFS)
		reused  bool
	}{
		{name: "a lookup's fd is lent again", keep: true, between: func(*overlayFS) {}, reused: true},
		{name: "a listing's fd is not kept", between: func(*overlayFS) {}},
		{name: "the kernel forgetting the node closes it", keep: true,
			between: func(o *overlayFS) { o.root.OnForget() }},
		{name: "the mount ending closes it", keep: true,
			between: func(o *overlayFS) { o.lowerRing.close() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := newTestOverlay(t)
			fd1, release, err := o.root.openLayerDir(lower, "", tc.keep)
			if err != nil {
				t.Fatal(err)
			}
			if release != nil {
				release()
			} else {
				unix.Close(fd1) // what lookup.DirFds does with an fd it was not lent
			}
			tc.between(o)
			if fdOpen(fd1) != tc.reused {
				t.Fatalf("fd %d open = %v after it was let go, want %v", fd1, fdOpen(fd1), tc.reused)
			}
			fd2, release2, ok := o.root.lendLower(lower)
			if ok != tc.reused || (ok && fd2 != fd1) {
				t.Fatalf("lendLower = %d, %v; want the kept fd %d: %v", fd2, ok, fd1, tc.reused)
			}
			if ok {
				release2()
			}
		})
	}
}

// The ring keeps the lower fds of at most its size of nodes: each new one takes the
// oldest's place.
func TestLowerRingLetsTheOldestGo(t *testing.T) {
	o := newTestOverlay(t)
	o.lowerRing = newDirRing(2, o.dropLower)
	nodes := []*node{{ofs: o}, {ofs: o}, {ofs: o}}
	var fds []int
	for _, n := range nodes {
		fd, release, err := n.openLayerDir(1, "", true)
		if err != nil {
			t.Fatal(err)
		}
		release()
		fds = append(fds, fd)
	}
	if _, _, ok := nodes[0].lendLower(1); ok || fdOpen(fds[0]) {
		t.Error("the oldest node still keeps its fd")
	}
	for i := 1; i < 3; i++ {
		fd, release, ok := nodes[i].lendLower(1)
		if !ok || fd != fds[i] || !fdOpen(fds[i]) {
			t.Errorf("node %d lost its fd", i)
			continue
		}
		release()
	}
}
