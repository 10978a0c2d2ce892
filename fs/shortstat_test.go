package fs

import (
	"math/rand"
	"syscall"
	"testing"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// TestShortStatKeepsWhatTheKernelIsShown checks that a remembered stat, filled into a
// FUSE attribute, is what the full stat gives, for random values of every field.
func TestShortStatKeepsWhatTheKernelIsShown(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 1000; i++ {
		var st unix.Stat_t
		b := unsafe.Slice((*byte)(unsafe.Pointer(&st)), unsafe.Sizeof(st))
		r.Read(b)
		// Real nanoseconds are below 1e9; times may be before 1970.
		st.Atim.Nsec, st.Mtim.Nsec, st.Ctim.Nsec = r.Int63n(1e9), r.Int63n(1e9), r.Int63n(1e9)
		var s shortStat
		s.set(&st)
		back := s.stat()
		var want, got fuse.Attr
		want.FromStat((*syscall.Stat_t)(unsafe.Pointer(&st)))
		got.FromStat((*syscall.Stat_t)(unsafe.Pointer(&back)))
		if got != want {
			t.Fatalf("stat %+v\nis shown as %+v\nremembered, as %+v", st, want, got)
		}
	}
}

// TestNodeSize keeps the node in its allocation class: the kernel holds a node per name
// it looked up (about 54,000 after walking the benchmark's 49,411 files).
func TestNodeSize(t *testing.T) {
	if got := unsafe.Sizeof(node{}); got > 320 {
		t.Errorf("a node is %d bytes, more than the 320-byte allocation class it fits now", got)
	}
}
