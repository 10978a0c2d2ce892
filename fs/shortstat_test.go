package fs

import (
	"math"
	"math/rand"
	"syscall"
	"testing"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// TestShortStatKeepsWhatTheKernelIsShown checks that a remembered stat, filled into a
// FUSE attribute, is what the full stat gives, for random values of every field, and
// that a stat with a time it cannot hold is not kept at all.
func TestShortStatKeepsWhatTheKernelIsShown(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	const span = math.MaxInt64 / 1_000_000_000 // the seconds nsOf takes, either way
	randTime := func() unix.Timespec {
		// Real nanoseconds are below 1e9; times may be before 1970, and one in eight
		// is anywhere in the int64 range (mostly outside what shortStat holds).
		ts := unix.Timespec{Sec: r.Int63n(2*span-1) - (span - 1), Nsec: r.Int63n(1e9)}
		if r.Intn(8) == 0 {
			ts.Sec = int64(r.Uint64())
		}
		return ts
	}
	kept := 0
	for i := 0; i < 3000; i++ {
		var st unix.Stat_t
		b := unsafe.Slice((*byte)(unsafe.Pointer(&st)), unsafe.Sizeof(st))
		r.Read(b)
		st.Atim, st.Mtim, st.Ctim = randTime(), randTime(), randTime()
		if st.Ino == 0 {
			st.Ino = 1
		}
		var s shortStat
		fits := true
		for _, ts := range []unix.Timespec{st.Atim, st.Mtim, st.Ctim} {
			fits = fits && ts.Sec < span && ts.Sec > -span
		}
		if ok := s.set(&st); ok != fits || s.valid() != fits {
			t.Fatalf("times %v %v %v: set reports %v, valid %v; want %v", st.Atim, st.Mtim, st.Ctim, ok, s.valid(), fits)
		}
		if !fits {
			continue
		}
		kept++
		back := s.stat()
		var want, got fuse.Attr
		want.FromStat((*syscall.Stat_t)(unsafe.Pointer(&st)))
		got.FromStat((*syscall.Stat_t)(unsafe.Pointer(&back)))
		if got != want {
			t.Fatalf("stat %+v\nis shown as %+v\nremembered, as %+v", st, want, got)
		}
	}
	if kept < 2000 {
		t.Fatalf("only %d of 3000 random stats were kept: the test draws too few times in range", kept)
	}
}

// TestShortStatTimes checks the edges of the times shortStat holds.
func TestShortStatTimes(t *testing.T) {
	for _, tc := range []struct {
		name string
		ts   unix.Timespec
		kept bool
	}{
		{"the epoch is kept", unix.Timespec{}, true},
		{"a time just before the epoch is kept", unix.Timespec{Sec: -1, Nsec: 999_999_999}, true},
		{"a time in 1901 (ext4's earliest) is kept", unix.Timespec{Sec: -2147483648, Nsec: 1}, true},
		{"a time in 2446 (ext4's latest) is not kept", unix.Timespec{Sec: 15032385535, Nsec: 999_999_999}, false},
		{"the last whole second that fits is kept", unix.Timespec{Sec: 9223372035, Nsec: 999_999_999}, true},
		{"the first second that does not fit is not kept", unix.Timespec{Sec: 9223372036}, false},
		{"the earliest whole second of the range is kept", unix.Timespec{Sec: -9223372035, Nsec: 0}, true},
		{"a nanosecond count out of range is not kept", unix.Timespec{Sec: 1, Nsec: 1e9}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := unix.Stat_t{Ino: 7, Atim: tc.ts, Mtim: tc.ts, Ctim: tc.ts}
			var s shortStat
			if got := s.set(&st); got != tc.kept || s.valid() != tc.kept {
				t.Fatalf("set %v: reports %v, valid %v; want %v", tc.ts, got, s.valid(), tc.kept)
			}
			if !tc.kept {
				return
			}
			if back := s.stat(); back.Atim != tc.ts || back.Mtim != tc.ts || back.Ctim != tc.ts {
				t.Fatalf("set %v, got back %v %v %v", tc.ts, back.Atim, back.Mtim, back.Ctim)
			}
		})
	}
}

// TestNodeSize keeps the node in the 256-byte allocation class: the kernel holds a node
// per name it looked up (about 62,000 after the benchmark's walk of its 49,450 files),
// so each byte is 62 KB of live heap there.
func TestNodeSize(t *testing.T) {
	if got := unsafe.Sizeof(node{}); got > 256 {
		t.Errorf("a node is %d bytes, more than the 256-byte allocation class it fits now", got)
	}
}
