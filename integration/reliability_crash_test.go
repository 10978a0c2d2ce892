package integration

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The crash test: a worker process copies up and writes files of many sizes through the
// mount while the daemon is killed with SIGKILL at random moments (some during the
// mount itself). After every kill the dead mount is cleaned with fusermount3 -u, the same
// upper and work are mounted again, and the checker reads everything back.
//
// Every block the worker writes is a self-describing record (file, offset, generation,
// checksum), so each 4 KiB block of a file must be either the lower file's block, a
// whole record written for that very place, or zeros past the lower file's end: a
// partially copied file shows up as a short file or a foreign block. The worker logs a
// record as durable only once fsync returned, so the checker knows which records must
// be there.

const recSize = 4096

// crashFile is one lower file of the crash test. Sparse files have data only in the
// blocks listed (a list of [start, end) block ranges), holes elsewhere.
type crashFile struct {
	Name   string
	Size   int64
	Sparse [][2]int64 `json:",omitempty"`
}

func crashFiles() []crashFile {
	return []crashFile{
		{Name: "z0", Size: 0},
		{Name: "s1", Size: 1},
		{Name: "s100", Size: 100},
		{Name: "b4095", Size: 4095},
		{Name: "b4096", Size: 4096},
		{Name: "b4097", Size: 4097},
		{Name: "m64k", Size: 64<<10 + 7},
		{Name: "m1m", Size: 1 << 20},
		{Name: "d/e/f3m", Size: 3<<20 + 5},
		{Name: "l16m", Size: 16 << 20},
		{Name: "l24m", Size: 24<<20 + 3},
		{Name: "sp32m", Size: 32 << 20, Sparse: [][2]int64{{0, 1}, {2048, 2064}, {7936, 7937}}},
	}
}

// lowerBlock is block blk of f as written in the lower layer.
func (f crashFile) lowerBlock(blk int64) []byte {
	start := blk * recSize
	if start >= f.Size {
		return nil
	}
	b := make([]byte, min(recSize, f.Size-start))
	if f.Sparse != nil {
		data := false
		for _, r := range f.Sparse {
			data = data || (blk >= r[0] && blk < r[1])
		}
		if !data {
			return b
		}
	}
	h := int64(len(f.Name)*131 + int(f.Name[0]))
	for i := range b {
		o := start + int64(i)
		b[i] = byte(h + o*31 + o>>9)
	}
	return b
}

func (f crashFile) writeLower(t testing.TB, root string) {
	t.Helper()
	p := filepath.Join(root, f.Name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	if err := fd.Truncate(f.Size); err != nil {
		t.Fatal(err)
	}
	for blk := int64(0); blk*recSize < f.Size; blk++ {
		b := f.lowerBlock(blk)
		if f.Sparse != nil && !slices.ContainsFunc(b, func(c byte) bool { return c != 0 }) {
			continue
		}
		if _, err := fd.WriteAt(b, blk*recSize); err != nil {
			t.Fatal(err)
		}
	}
}

// record is the 4 KiB block the worker writes for (name, off) in generation gen.
func record(name string, off int64, gen uint64) []byte {
	b := make([]byte, recSize)
	n := copy(b, fmt.Sprintf("COWFSREC %s %d %d\n", name, off, gen))
	for i := n; i < recSize-sha256.Size; i++ {
		b[i] = byte(gen) + byte(i)
	}
	sum := sha256.Sum256(b[:recSize-sha256.Size])
	copy(b[recSize-sha256.Size:], sum[:])
	return b
}

// parseRecord reports the generation of a whole record for (name, off).
func parseRecord(b []byte, name string, off int64) (uint64, bool) {
	if len(b) != recSize || !bytes.HasPrefix(b, []byte("COWFSREC ")) {
		return 0, false
	}
	sum := sha256.Sum256(b[:recSize-sha256.Size])
	if !bytes.Equal(sum[:], b[recSize-sha256.Size:]) {
		return 0, false
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) != 4 || f[1] != name || f[2] != strconv.FormatInt(off, 10) {
		return 0, false
	}
	gen, err := strconv.ParseUint(f[3], 10, 64)
	return gen, err == nil
}

type crashWorkerArgs struct {
	Mnt   string
	Log   string
	Seed  int64
	Files []crashFile
}

func init() { workers["crash"] = crashWorker }

// crashWorker writes records through the mount until the mount dies under it. Log
// lines: "S name off gen" (fsync returned for that record), "C name blocks" (a new
// file complete and renamed into place).
func crashWorker(raw json.RawMessage) int {
	var a crashWorkerArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	logf, err := os.OpenFile(a.Log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	r := rand.New(rand.NewSource(a.Seed))
	gen := uint64(time.Now().UnixNano())
	fail := func(what string, err error) int {
		fmt.Fprintf(os.Stderr, "worker stops: %s: %v\n", what, err)
		return 0
	}
	for {
		gen++
		f := a.Files[r.Intn(len(a.Files))]
		path := filepath.Join(a.Mnt, f.Name)
		switch op := r.Intn(10); {
		case op < 7: // write a few records into a lower file (the first one copies it up)
			fd, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				return fail("open "+f.Name, err)
			}
			var wrote []int64
			for n := 1 + r.Intn(3); n > 0; n-- {
				blocks := (f.Size+recSize-1)/recSize + 2
				off := r.Int63n(blocks) * recSize
				if op == 6 { // append after the current end
					st, err := fd.Stat()
					if err != nil {
						fd.Close()
						return fail("fstat "+f.Name, err)
					}
					off = (st.Size() + recSize - 1) / recSize * recSize
					if off > f.Size+64*recSize {
						off = 0
					}
				}
				if _, err := fd.WriteAt(record(f.Name, off, gen), off); err != nil {
					fd.Close()
					return fail("write "+f.Name, err)
				}
				wrote = append(wrote, off)
			}
			if r.Intn(2) == 0 {
				if err := fd.Sync(); err != nil {
					fd.Close()
					return fail("fsync "+f.Name, err)
				}
				for _, off := range wrote {
					fmt.Fprintf(logf, "S %s %d %d\n", f.Name, off, gen)
				}
			}
			if err := fd.Close(); err != nil {
				return fail("close "+f.Name, err)
			}
		case op < 9: // a new file, written, fsynced and renamed into place
			name := fmt.Sprintf("n%d", gen)
			tmp := filepath.Join(a.Mnt, name+".tmp")
			fd, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
			if err != nil {
				return fail("create "+name, err)
			}
			blocks := 1 + r.Intn(4)
			for i := 0; i < blocks; i++ {
				if _, err := fd.Write(record(name, int64(i)*recSize, gen)); err != nil {
					fd.Close()
					return fail("write "+name, err)
				}
			}
			if err := fd.Sync(); err != nil {
				fd.Close()
				return fail("fsync "+name, err)
			}
			if err := fd.Close(); err != nil {
				return fail("close "+name, err)
			}
			if err := os.Rename(tmp, filepath.Join(a.Mnt, name)); err != nil {
				return fail("rename "+name, err)
			}
			fmt.Fprintf(logf, "C %s %d\n", name, blocks)
		default: // read some of a file
			fd, err := os.Open(path)
			if err != nil {
				return fail("open "+f.Name, err)
			}
			_, err = io.CopyN(io.Discard, fd, 1<<20)
			fd.Close()
			if err != nil && err != io.EOF {
				return fail("read "+f.Name, err)
			}
		}
	}
}

// crashState is what the checker knows from the worker logs since the upper was last
// emptied.
type crashState struct {
	durable map[string]map[int64]uint64 // name -> offset -> least generation
	created map[string]int              // new file -> blocks
}

func newCrashState() *crashState {
	return &crashState{durable: map[string]map[int64]uint64{}, created: map[string]int{}}
}

// readLog folds the complete lines of the worker's log into s and empties the log.
func (s *crashState) readLog(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	os.Remove(path)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 4 && f[0] == "S":
			off, _ := strconv.ParseInt(f[2], 10, 64)
			gen, _ := strconv.ParseUint(f[3], 10, 64)
			if s.durable[f[1]] == nil {
				s.durable[f[1]] = map[int64]uint64{}
			}
			s.durable[f[1]][off] = max(s.durable[f[1]][off], gen)
		case len(f) == 3 && f[0] == "C":
			n, _ := strconv.Atoi(f[2])
			s.created[f[1]] = n
		}
	}
}

// check verifies the mounted view and the upper against the lower files and s. It
// returns how many lower files had an upper copy.
func (s *crashState) check(t *testing.T, sd *scratchDirs, files []crashFile) (copied int) {
	t.Helper()
	for _, f := range files {
		merged := filepath.Join(sd.mnt, f.Name)
		var st unix.Stat_t
		if err := unix.Lstat(merged, &st); err != nil {
			t.Errorf("%s: %v", f.Name, err)
			continue
		}
		var ust unix.Stat_t
		inUpper := unix.Lstat(filepath.Join(sd.upper, f.Name), &ust) == nil
		if !inUpper {
			// The lower version: same size, and its first and last blocks.
			if st.Size != f.Size {
				t.Errorf("%s: not copied up but %d bytes, lower has %d", f.Name, st.Size, f.Size)
			}
			if len(s.durable[f.Name]) > 0 {
				t.Errorf("%s: fsynced records are lost: the file is not in the upper", f.Name)
			}
			continue
		}
		copied++
		if ust.Size != st.Size {
			t.Errorf("%s: merged size %d, upper size %d", f.Name, st.Size, ust.Size)
		}
		data, err := os.ReadFile(merged)
		if err != nil {
			t.Errorf("%s: %v", f.Name, err)
			continue
		}
		s.checkBlocks(t, f, data)
	}
	for name, blocks := range s.created {
		data, err := os.ReadFile(filepath.Join(sd.mnt, name))
		if err != nil {
			t.Errorf("new file %s (complete before the kill): %v", name, err)
			continue
		}
		if len(data) != blocks*recSize {
			t.Errorf("new file %s: %d bytes, want %d", name, len(data), blocks*recSize)
			continue
		}
		for i := 0; i < blocks; i++ {
			if _, ok := parseRecord(data[i*recSize:(i+1)*recSize], name, int64(i)*recSize); !ok {
				t.Errorf("new file %s: block %d is not its record", name, i)
			}
		}
	}
	// Nothing but the lower files, the worker's new files and its temporaries.
	names, err := readDirNames(sd.mnt)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if n == "d" || strings.HasPrefix(n, "n") || slices.ContainsFunc(files, func(f crashFile) bool { return f.Name == n }) {
			continue
		}
		t.Errorf("unexpected entry %q in the merged root", n)
	}
	return copied
}

func (s *crashState) checkBlocks(t *testing.T, f crashFile, data []byte) {
	t.Helper()
	if int64(len(data)) < f.Size {
		t.Errorf("%s: %d bytes, shorter than the lower file's %d: a partial copy", f.Name, len(data), f.Size)
	}
	bad := 0
	for off := int64(0); off < int64(len(data)); off += recSize {
		mb := data[off:min(off+recSize, int64(len(data)))]
		lb := f.lowerBlock(off / recSize)
		gen, isRec := parseRecord(mb, f.Name, off)
		ok := isRec ||
			(bytes.HasPrefix(mb, lb) && !slices.ContainsFunc(mb[len(lb):], func(c byte) bool { return c != 0 }))
		if !ok && bad < 5 {
			t.Errorf("%s: block at %d is neither the lower's, nor its record, nor zeros past the lower's end (%q...)",
				f.Name, off, mb[:min(len(mb), 40)])
		}
		if !ok {
			bad++
		}
		if want, durable := s.durable[f.Name][off]; durable && (!isRec || gen < want) {
			t.Errorf("%s: block at %d was fsynced with generation %d, now holds generation %d (record %v)", f.Name, off, want, gen, isRec)
		}
	}
	for off := range s.durable[f.Name] {
		if off >= int64(len(data)) {
			t.Errorf("%s: fsynced record at %d is past the end (%d bytes)", f.Name, off, len(data))
		}
	}
}

func TestCrashKillDuringCopyUpAndWrites(t *testing.T) {
	kills := envCount(t, "COWFS_CRASH_KILLS", 12)
	sd := newScratch(t)
	files := crashFiles()
	for _, f := range files {
		f.writeLower(t, sd.lower)
	}
	lowerBefore := takeSnapshot(sd.lower, lowerDir)
	logPath := filepath.Join(sd.root, "worker.log")
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewSource(seed))
	state := newCrashState()

	d := mountDaemon(t, sd.options(), sd.mnt)
	var (
		stuck, duringMount, junkSeen, resets, copiedSeen int
		workerExitTimeouts                               int
	)
	start := time.Now()
	for k := 0; k < kills && !t.Failed(); k++ {
		w := workerCmd(t, "crash", crashWorkerArgs{Mnt: sd.mnt, Log: logPath, Seed: r.Int63(), Files: files})
		var wout lockedBuffer
		w.Stdout, w.Stderr = &wout, &wout
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		wdone := make(chan error, 1)
		go func() { wdone <- w.Wait() }()
		time.Sleep(time.Duration(r.Intn(400)) * time.Millisecond)
		if d.kill(t) {
			stuck++
		}
		select {
		case err := <-wdone:
			if err != nil {
				t.Errorf("kill %d: worker: %v: %s", k, err, wout.String())
			}
		case <-time.After(30 * time.Second):
			workerExitTimeouts++
			t.Errorf("kill %d: the worker still runs 30 s after the daemon died; killing it", k)
			w.Process.Kill()
			<-wdone
		}
		// The dead daemon's mount: fusermount3 -u alone must clean it.
		if out, err := runFor(10*time.Second, "fusermount3", "-u", sd.mnt); err != nil && isMountpoint(sd.mnt) {
			t.Errorf("kill %d: fusermount3 -u of the dead mount: %v: %s", k, err, out)
		}
		cleanMount(t, sd.mnt)
		state.readLog(t, logPath)
		if names, _ := readDirNames(filepath.Join(sd.work, "work")); len(names) > 0 {
			junkSeen++
		}
		if r.Intn(4) == 0 {
			// Start afresh now and then, so that big files are copied up again.
			resets++
			if err := os.RemoveAll(sd.upper); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(sd.upper, 0o755); err != nil {
				t.Fatal(err)
			}
			state = newCrashState()
		}
		if r.Intn(4) == 0 {
			// A kill while the daemon mounts.
			duringMount++
			md := startDaemon(t, sd.options(), sd.mnt)
			time.Sleep(time.Duration(r.Intn(30)) * time.Millisecond)
			if md.kill(t) {
				stuck++
			}
			cleanMount(t, sd.mnt)
		}
		d = mountDaemon(t, sd.options(), sd.mnt)
		if names, _ := readDirNames(filepath.Join(sd.work, "work")); len(names) > 0 {
			t.Errorf("kill %d: the work dir holds %q after the mount, want it emptied", k, names)
		}
		copiedSeen += state.check(t, sd, files)
		if k%50 == 49 {
			if diff := diffSnapshots("before", lowerBefore, "now", takeSnapshot(sd.lower, lowerDir)); diff != "" {
				t.Fatalf("kill %d: the lower layer changed:\n%s", k, diff)
			}
		}
	}
	d.stop(t)
	if diff := diffSnapshots("before", lowerBefore, "after", takeSnapshot(sd.lower, lowerDir)); diff != "" {
		t.Errorf("the lower layer changed:\n%s", diff)
	}
	if !t.Failed() {
		figure(t, "kills survived: %d (%d of them during the mount), in %v", kills, duringMount, time.Since(start).Round(time.Second))
	}
	figure(t, "work dir held an interrupted copy-up after %d kills; %d upper resets; %d copied-up files checked block by block", junkSeen, resets, copiedSeen)
	figure(t, "daemons stuck after SIGKILL (connection aborted): %d; workers hung: %d", stuck, workerExitTimeouts)
}

// A daemon killed while it mounts must die at once and leave a mount that fusermount3 -u
// cleans. go-fuse's "poll hack" (the daemon opening a file in its own new mount) made a
// kill at that moment leave a zombie with a thread stuck in the kernel, freed only by
// /sys/fs/fuse/connections/N/abort; cowfs no longer runs it (fs/mount.go).
func TestCrashKillDuringMount(t *testing.T) {
	n := envCount(t, "COWFS_CRASH_MOUNT_KILLS", 40)
	sd := newScratch(t)
	if err := os.WriteFile(filepath.Join(sd.lower, "f"), []byte("lower"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewSource(time.Now().UnixNano()))
	stuck, mounted := 0, 0
	for i := 0; i < n; i++ {
		d := startDaemon(t, sd.options(), sd.mnt)
		// Wait for the mount to appear (the kernel has the mount, the daemon may still
		// be in its first requests), then kill within a few milliseconds.
		deadline := time.Now().Add(10 * time.Second)
		for !isMountpoint(sd.mnt) && d.alive() && time.Now().Before(deadline) {
			time.Sleep(100 * time.Microsecond)
		}
		if isMountpoint(sd.mnt) {
			mounted++
		}
		time.Sleep(time.Duration(r.Intn(2000)) * time.Microsecond)
		if d.kill(t) {
			stuck++
		}
		cleanMount(t, sd.mnt)
	}
	d := mountDaemon(t, sd.options(), sd.mnt)
	if b, err := os.ReadFile(filepath.Join(sd.mnt, "f")); err != nil || string(b) != "lower" {
		t.Errorf("after %d kills during the mount: f = %q, %v", n, b, err)
	}
	d.stop(t)
	figure(t, "kills during the mount: %d (%d after the mount appeared), daemons stuck: %d", n, mounted, stuck)
}
