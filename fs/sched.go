package fs

import (
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// How the daemon's threads meet the Go scheduler.
//
// go-fuse serves requests from a few reader goroutines, each looping on read(2) of
// /dev/fuse, handling the request and writing the reply, without going through the Go
// scheduler in between: a blocking read(2) keeps the goroutine's P. Two runtime rules
// then made every request cost about 1.7 context switches and 30 µs of CPU, against one
// and 19 µs for fuse-overlayfs (50,000 getxattr in a row, 2 CPUs):
//
//   - sysmon takes back a P whose goroutine sits in a system call while no other P is
//     idle; with GOMAXPROCS equal to the CPUs (2 here) and two or three readers
//     blocked in read(2), no P is ever idle;
//   - sysmon also takes back a P whose schedule tick has not moved for 10 ms, and a
//     reader that never yields never moves it.
//
// Each take-back sends the reader through the slow path of the system call's return
// (hand the P over, find another, often park the thread), and puts sysmon back to
// waking every 20 µs for the next millisecond: 12,000–28,000 sysmon wake-ups in a
// 63,000-request run, with 0.2–0.5 s of CPU.
//
// So cowfs (1) lets go-fuse size its reader pool from GOMAXPROCS as it is, then (200 ms
// after the mount, see mount) gives the runtime more Ps than readers can hold (the
// readers plus the CPUs), so there is
// always an idle P and a blocked read keeps its own; and (2) passes each request through
// schedFS, which yields to the scheduler once a millisecond while requests come in a
// row (spaced ones: below), so no P's tick stays still for 10 ms. The same run then
// costs 28–32 µs a request (fuse-overlayfs: 33 µs), with about 4,000 sysmon wake-ups.
// A GOMAXPROCS set in the environment is left as it is.
//
// A yield is not free: with idle Ps, runtime.Gosched wakes a second thread to look for
// work (wakep), and on this VM waking a thread on the other, halted CPU takes tens of
// µs. A caller that pauses between requests (it sleeps, or waits on something else)
// sends them more than a millisecond apart, so each of them yielded: a statfs 1 ms
// after the previous one returned took 107–150 µs (median) against 17–20 µs on
// fuse-overlayfs. Yielding less often everywhere is no answer: go-fuse's two or three
// readers take turns (the kernel wakes the one that has waited longest), so at a
// period of 5 ms each reader yields only every 15 ms or so, and back-to-back requests
// then lose to sysmon's take-backs (50,000 getxattr in a row: 1.02–1.23x
// fuse-overlayfs against 0.94–1.00x, four runs each). So the period depends on how the requests come:
// once a millisecond while they come close together, once every 5 ms from a request
// that comes spacedGap or more after the previous one. Bench, two alternated rounds
// against the 1 ms period everywhere (cowfs/fuse-overlayfs): roundtrip-spaced
// 0.87–0.96x against 1.20–1.21x, getxattr in a row 1.01–1.03x against 0.91–1.00x,
// stat 0.99–1.01x against 1.05x, re-reads 0.90–0.97x against 0.93–0.97x, cold
// `ls -lR` 0.73–0.87x against 0.85–0.90x.

// raiseProcsAfter is how long after the mount raiseProcs runs.
const raiseProcsAfter = 200 * time.Millisecond

// raiseProcs gives the runtime more Ps than go-fuse's readers can hold in read(2); call
// it after fuse.NewServer (which sized its pool from the GOMAXPROCS before).
func raiseProcs() {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	cpus := runtime.GOMAXPROCS(0)
	// go-fuse: at most min(max(GOMAXPROCS, 2), 16) idle readers, plus one that
	// finished a request and reads again before it notices the pool is full.
	readers := min(max(cpus, 2), 16) + 1
	runtime.GOMAXPROCS(cpus + readers)
}

// The yield periods of schedFS (see above).
const (
	// yieldBusy is the period while requests come less than spacedGap apart.
	yieldBusy = time.Millisecond
	// yieldSpaced is the period from a request that came spacedGap or more after the
	// previous one.
	yieldSpaced = 5 * time.Millisecond
	// spacedGap is the time between two requests' arrivals from which the second is
	// spaced. A round trip takes 20–60 µs here, so requests in a row come closer.
	spacedGap = 200 * time.Microsecond
)

// schedFS passes a request through the Go scheduler once a period (see above).
// Forget and BatchForget are left out: they have no reply and come in bursts.
// It also tells the walk table (walk.go) what each process asks for.
type schedFS struct {
	fuse.RawFileSystem
	// last is when a request last yielded, in Unix nanoseconds; atomic.
	last *atomic.Int64
	// prev is when the latest request arrived, in Unix nanoseconds; atomic.
	prev *atomic.Int64
	// walks is the mount's walk table (nil: none).
	walks *walkTable
}

func newSchedFS(fs fuse.RawFileSystem, walks *walkTable) schedFS {
	return schedFS{RawFileSystem: fs, last: new(atomic.Int64), prev: new(atomic.Int64), walks: walks}
}

// isDir reports whether mode is a directory's.
func isDir(mode uint32) bool { return mode&syscall.S_IFMT == syscall.S_IFDIR }

// tick yields the processor if no request did in the last period.
func (s schedFS) tick() {
	if s.mustYield(time.Now().UnixNano()) {
		runtime.Gosched()
	}
}

// mustYield records a request that arrived at now (Unix nanoseconds) and reports
// whether it is the one to yield: the first one a period after the last yield.
func (s schedFS) mustYield(now int64) bool {
	period := int64(yieldBusy)
	if now-s.prev.Swap(now) >= int64(spacedGap) {
		period = int64(yieldSpaced)
	}
	last := s.last.Load()
	return now-last >= period && s.last.CompareAndSwap(last, now)
}

func (s schedFS) Lookup(c <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	s.tick()
	st := s.RawFileSystem.Lookup(c, h, name, out)
	if !st.Ok() || !isDir(out.Mode) {
		s.walks.touched(h.Pid)
	}
	return st
}

func (s schedFS) GetAttr(c <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	s.tick()
	st := s.RawFileSystem.GetAttr(c, in, out)
	if !st.Ok() || !isDir(out.Mode) {
		s.walks.touched(in.Pid)
	}
	return st
}

func (s schedFS) SetAttr(c <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	s.tick()
	s.walks.touched(in.Pid)
	return s.RawFileSystem.SetAttr(c, in, out)
}

func (s schedFS) Statx(c <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	s.tick()
	st := s.RawFileSystem.Statx(c, in, out)
	if !st.Ok() || !isDir(uint32(out.Mode)) {
		s.walks.touched(in.Pid)
	}
	return st
}

func (s schedFS) Access(c <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	s.tick()
	s.walks.touched(in.Pid)
	return s.RawFileSystem.Access(c, in)
}

func (s schedFS) Readlink(c <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	s.tick()
	s.walks.touched(h.Pid)
	return s.RawFileSystem.Readlink(c, h)
}

func (s schedFS) GetXAttr(c <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	s.tick()
	s.walks.touched(h.Pid)
	return s.RawFileSystem.GetXAttr(c, h, attr, dest)
}

func (s schedFS) ListXAttr(c <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	s.tick()
	s.walks.touched(h.Pid)
	return s.RawFileSystem.ListXAttr(c, h, dest)
}

func (s schedFS) SetXAttr(c <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	s.tick()
	s.walks.touched(in.Pid)
	return s.RawFileSystem.SetXAttr(c, in, attr, data)
}

func (s schedFS) RemoveXAttr(c <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	s.tick()
	s.walks.touched(h.Pid)
	return s.RawFileSystem.RemoveXAttr(c, h, attr)
}

func (s schedFS) Mknod(c <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	s.tick()
	s.walks.touched(in.Pid)
	return s.RawFileSystem.Mknod(c, in, name, out)
}

func (s schedFS) Mkdir(c <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	s.tick()
	s.walks.touched(in.Pid)
	return s.RawFileSystem.Mkdir(c, in, name, out)
}

func (s schedFS) Unlink(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	s.tick()
	s.walks.touched(h.Pid)
	return s.RawFileSystem.Unlink(c, h, name)
}

func (s schedFS) Rmdir(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	s.tick()
	s.walks.touched(h.Pid)
	return s.RawFileSystem.Rmdir(c, h, name)
}

func (s schedFS) Rename(c <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	s.tick()
	s.walks.touched(in.Pid)
	return s.RawFileSystem.Rename(c, in, oldName, newName)
}

func (s schedFS) Link(c <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	s.tick()
	s.walks.touched(in.Pid)
	return s.RawFileSystem.Link(c, in, name, out)
}

func (s schedFS) Symlink(c <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	s.tick()
	s.walks.touched(h.Pid)
	return s.RawFileSystem.Symlink(c, h, target, name, out)
}

func (s schedFS) Create(c <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	s.tick()
	s.walks.touched(in.Pid)
	return s.RawFileSystem.Create(c, in, name, out)
}

func (s schedFS) Open(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	s.tick()
	s.walks.touched(in.Pid)
	return s.RawFileSystem.Open(c, in, out)
}

func (s schedFS) Read(c <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	s.tick()
	s.walks.touched(in.Pid)
	return s.RawFileSystem.Read(c, in, buf)
}

func (s schedFS) Write(c <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	s.tick()
	s.walks.touched(in.Pid)
	return s.RawFileSystem.Write(c, in, data)
}

func (s schedFS) Writev(c <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	s.tick()
	s.walks.touched(in.Pid)
	return s.RawFileSystem.Writev(c, in, data)
}

func (s schedFS) Release(c <-chan struct{}, in *fuse.ReleaseIn) {
	s.tick()
	s.walks.touched(in.Pid)
	s.RawFileSystem.Release(c, in)
}

func (s schedFS) Fsync(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	s.tick()
	s.walks.touched(in.Pid)
	return s.RawFileSystem.Fsync(c, in)
}

func (s schedFS) ReadDir(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	s.tick()
	return s.RawFileSystem.ReadDir(c, in, out)
}

func (s schedFS) ReadDirPlus(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	s.tick()
	if in.Offset == 0 {
		s.walks.listing(in.Pid)
	}
	return s.RawFileSystem.ReadDirPlus(c, in, out)
}

func (s schedFS) StatFs(c <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	s.tick()
	return s.RawFileSystem.StatFs(c, h, out)
}
