package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// raceProg is cowfs built with the race detector, for the concurrency tests (a race
// report makes the daemon print "DATA RACE"); built once, on first use.
var (
	raceOnce    sync.Once
	raceProg    string
	raceProgErr error
)

func raceBinary(t testing.TB) string {
	t.Helper()
	raceOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cowfs-race-")
		if err != nil {
			raceProgErr = err
			return
		}
		raceProg = filepath.Join(dir, "cowfs")
		cmd := exec.Command("go", "build", "-race", "-o", raceProg, "./cmd/cowfs")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			raceProgErr = fmt.Errorf("go build -race: %v: %s", err, out)
		}
	})
	if os.Getenv("COWFS_TEST_PROG") != "" {
		return fuseProg
	}
	if raceProgErr != nil {
		t.Fatal(raceProgErr)
	}
	return raceProg
}

// removeRaceBinary removes the race-detector build, if a test made one (runMain, when
// the tests end).
func removeRaceBinary() {
	if raceProg != "" {
		os.RemoveAll(filepath.Dir(raceProg))
	}
}

// withProg runs f with fuseProg set to prog (tests using it are not parallel).
func withProg(prog string, f func()) {
	old := fuseProg
	fuseProg = prog
	defer func() { fuseProg = old }()
	f()
}

func checkNoRace(t *testing.T, d *fuseDaemon) {
	t.Helper()
	if out := d.out.String(); strings.Contains(out, "DATA RACE") {
		t.Errorf("the race detector reported in the daemon:\n%s", out)
	}
}

const appendRec = 128

// appendRecord is record seq of process p: fixed size, ending in a newline, with a CRC.
func appendRecord(p, seq int) []byte {
	body := fmt.Sprintf("P%02d S%06d ", p, seq)
	body += strings.Repeat(string(rune('a'+p%26)), appendRec-len(body)-9)
	return []byte(fmt.Sprintf("%s%08x\n", body, crc32.ChecksumIEEE([]byte(body))))
}

type appendArgs struct {
	Path, Go string
	P, N     int
}

func init() { workers["append"] = appendWorker }

// appendWorker waits for the go file, then writes its own 4 KiB block at offset P*4096
// through one descriptor and appends N records through another (O_APPEND).
func appendWorker(raw json.RawMessage) int {
	var a appendArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	for {
		if _, err := os.Stat(a.Go); err == nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	w, err := os.OpenFile(a.Path, os.O_WRONLY, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	app, err := os.OpenFile(a.Path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := w.WriteAt(bytes.Repeat([]byte{byte('A' + a.P)}, 4096), int64(a.P)*4096); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for i := 0; i < a.N; i++ {
		if _, err := app.Write(appendRecord(a.P, i)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if err := w.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := app.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// countMovesInto watches dir for name arriving (created or renamed in) and returns a
// function that stops watching and reports how often it did.
func countMovesInto(t *testing.T, dir, name string) func() int {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
		t.Fatal(err)
	}
	return func() int {
		defer unix.Close(fd)
		n := 0
		buf := make([]byte, 64<<10)
		for {
			k, err := unix.Read(fd, buf)
			if k <= 0 || err != nil {
				return n
			}
			for off := 0; off+unix.SizeofInotifyEvent <= k; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				nameBytes := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
				if string(bytes.TrimRight(nameBytes, "\x00")) == name {
					n++
				}
				off += unix.SizeofInotifyEvent + int(ev.Len)
			}
		}
	}
}

// Sixteen processes open the same lower file at once, each writes its own block and
// appends its own records: one copy-up (the file arrives in the upper exactly once),
// every block and every record there, none torn, each process's records in order. On
// kernel overlayfs too; cowfs runs with the race detector.
func TestSixteenProcessesWriteAndAppend(t *testing.T) {
	const procs, perProc = 16, 300
	lower := bytes.Repeat([]byte("lower-data-0123456789abcdef\n"), 16*4096/28+1)[:16*4096]
	for _, kind := range []mountKind{kernelKind, fuseKind} {
		t.Run(string(kind), func(t *testing.T) {
			var m *testMount
			withProg(raceBinary(t), func() {
				m = newTestMountOpts(t, kind, mountOpts{}, layer{"log": file(string(lower))}, layer{})
			})
			moves := countMovesInto(t, m.upper, "log")
			goFile := filepath.Join(m.root, "go")
			var cmds []*exec.Cmd
			for p := 0; p < procs; p++ {
				c := workerCmd(t, "append", appendArgs{Path: filepath.Join(m.dir, "log"), Go: goFile, P: p, N: perProc})
				var out bytes.Buffer
				c.Stdout, c.Stderr = &out, &out
				if err := c.Start(); err != nil {
					t.Fatal(err)
				}
				cmds = append(cmds, c)
			}
			time.Sleep(100 * time.Millisecond)
			os.WriteFile(goFile, nil, 0o644)
			for p, c := range cmds {
				if err := c.Wait(); err != nil {
					t.Errorf("process %d: %v: %s", p, err, c.Stdout)
				}
			}
			data, err := os.ReadFile(filepath.Join(m.dir, "log"))
			if err != nil {
				t.Fatal(err)
			}
			copies := moves()
			if copies != 1 {
				t.Errorf("log arrived in the upper %d times, want exactly one copy-up", copies)
			}
			checkAppended(t, data, procs, perProc)
			m.unmount()
			checkWorkEmpty(t, m)
			up, err := os.ReadFile(filepath.Join(m.upper, "log"))
			if err != nil || !bytes.Equal(up, data) {
				t.Errorf("the upper log (%d bytes, %v) differs from what the mount showed (%d bytes)", len(up), err, len(data))
			}
			if kind == fuseKind && !t.Failed() {
				figure(t, "16 processes: 1 copy-up, %d blocks and %d appended records intact", procs, procs*perProc)
			}
		})
	}
}

func checkAppended(t *testing.T, data []byte, procs, perProc int) {
	t.Helper()
	if len(data) != procs*4096+procs*perProc*appendRec {
		t.Errorf("log is %d bytes, want %d", len(data), procs*4096+procs*perProc*appendRec)
	}
	for p := 0; p < procs && (p+1)*4096 <= len(data); p++ {
		if !bytes.Equal(data[p*4096:(p+1)*4096], bytes.Repeat([]byte{byte('A' + p)}, 4096)) {
			t.Errorf("block %d is not process %d's", p, p)
		}
	}
	next := make([]int, procs)
	torn := 0
	for off := procs * 4096; off+appendRec <= len(data); off += appendRec {
		rec := data[off : off+appendRec]
		var p, seq int
		if _, err := fmt.Sscanf(string(rec), "P%02d S%06d ", &p, &seq); err != nil || p < 0 || p >= procs || !bytes.Equal(rec, appendRecord(p, seq)) {
			if torn++; torn <= 5 {
				t.Errorf("torn or foreign record at %d: %q", off, rec)
			}
			continue
		}
		if seq != next[p] {
			t.Errorf("process %d: record %d follows %d", p, seq, next[p]-1)
		}
		next[p] = seq + 1
	}
	for p, n := range next {
		if n != perProc {
			t.Errorf("process %d: %d records found, want %d", p, n, perProc)
		}
	}
}

type stormArgs struct {
	Dir  string
	W, N int
	Seed int64
}

func init() { workers["storm"] = stormWorker }

// stormWorker creates, renames and unlinks its own names (w<W>-*) in Dir, removes or
// renames the lower files l<j> with j%4 == W, and prints the names it left, as JSON.
func stormWorker(raw json.RawMessage) int {
	var a stormArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	r := rand.New(rand.NewSource(a.Seed))
	live := map[string]bool{}
	var names []string
	fail := func(err error) int { fmt.Fprintln(os.Stderr, err); return 1 }
	for i := 0; i < a.N; i++ {
		name := fmt.Sprintf("w%d-%d", a.W, i)
		p := filepath.Join(a.Dir, name)
		if err := os.WriteFile(p, []byte(name), 0o644); err != nil {
			return fail(err)
		}
		live[name] = true
		names = append(names, name)
		switch r.Intn(4) {
		case 0:
			if err := os.Remove(p); err != nil {
				return fail(err)
			}
			delete(live, name)
		case 1:
			if err := os.Rename(p, p+".r"); err != nil {
				return fail(err)
			}
			delete(live, name)
			live[name+".r"] = true
		case 2:
			// Rename over an older live name of ours.
			old := names[r.Intn(len(names))]
			if old != name && live[old] {
				if err := os.Rename(p, filepath.Join(a.Dir, old)); err != nil {
					return fail(err)
				}
				delete(live, name)
			}
		}
		if j := i; j < 40 && j%4 == a.W {
			l := filepath.Join(a.Dir, fmt.Sprintf("l%d", j))
			if j%8 < 4 {
				if err := os.Remove(l); err != nil {
					return fail(err)
				}
			} else {
				if err := os.Rename(l, l+".moved"); err != nil {
					return fail(err)
				}
				live[fmt.Sprintf("l%d.moved", j)] = true
			}
		}
	}
	var out []string
	for n := range live {
		out = append(out, n)
	}
	json.NewEncoder(os.Stdout).Encode(out)
	return 0
}

// Four processes storm one directory with creates, renames (also over each other's
// earlier names) and unlinks while two readers list it: no listing shows a name twice
// or loses an untouched one; the final listing is exact, every listed name stats, every
// removed name is gone (no stale cache entry), and a remount lists the same. The daemon
// runs with the race detector.
func TestStormOneDirectory(t *testing.T) {
	const workersN, lowerN = 4, 40
	perWorker := envCount(t, "COWFS_STORM_OPS", 400)
	lower := layer{}
	for j := 0; j < lowerN; j++ {
		lower[fmt.Sprintf("d/l%d", j)] = file("lower")
		lower[fmt.Sprintf("d/keep%d", j)] = file("keep")
	}
	var m *testMount
	withProg(raceBinary(t), func() {
		m = newTestMountOpts(t, fuseKind, mountOpts{}, lower, layer{})
	})
	dir := filepath.Join(m.dir, "d")
	stop := make(chan struct{})
	var readers sync.WaitGroup
	passes := make([]int, 2)
	for rd := 0; rd < 2; rd++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for ; ; passes[rd]++ {
				select {
				case <-stop:
					return
				default:
				}
				names, err := readDirNames(dir)
				if err != nil {
					t.Errorf("readdir during the storm: %v", err)
					return
				}
				if dup := duplicates(names); len(dup) > 0 {
					t.Errorf("a listing during the storm shows %q twice", dup)
					return
				}
				if missing := missingKeep(names, lowerN); len(missing) > 0 {
					t.Errorf("a listing during the storm lost untouched %q", missing)
					return
				}
			}
		}()
	}
	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	for w := 0; w < workersN; w++ {
		c := workerCmd(t, "storm", stormArgs{Dir: dir, W: w, N: perWorker, Seed: int64(w) + time.Now().UnixNano()})
		var out, errb bytes.Buffer
		c.Stdout, c.Stderr = &out, &errb
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
		outs = append(outs, &out)
	}
	var want []string
	for w, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Errorf("storm process %d: %v: %s", w, err, c.Stderr)
			continue
		}
		var live []string
		if err := json.Unmarshal(outs[w].Bytes(), &live); err != nil {
			t.Fatalf("storm process %d output: %v", w, err)
		}
		want = append(want, live...)
	}
	close(stop)
	readers.Wait()
	for j := 0; j < lowerN; j++ {
		want = append(want, fmt.Sprintf("keep%d", j))
	}
	sort.Strings(want)
	check := func(when string) {
		t.Helper()
		got, err := readDirNames(dir)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: %s", when, setDiff(want, got))
		}
		for _, n := range got {
			if _, err := os.Lstat(filepath.Join(dir, n)); err != nil {
				t.Errorf("%s: listed %s does not stat: %v", when, n, err)
			}
		}
		for w := 0; w < workersN; w++ {
			for i := 0; i < perWorker; i++ {
				for _, n := range []string{fmt.Sprintf("w%d-%d", w, i), fmt.Sprintf("w%d-%d.r", w, i)} {
					if _, found := slices.BinarySearch(want, n); found {
						continue
					}
					if _, err := os.Lstat(filepath.Join(dir, n)); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("%s: removed %s still stats: %v", when, n, err)
					}
				}
			}
		}
	}
	check("after the storm")
	m.unmount()
	checkWorkEmpty(t, m)
	m.mount()
	check("after a remount")
	if !t.Failed() {
		figure(t, "storm: %d processes x %d names in one directory, %d listings during it, final listing exact", workersN, perWorker, passes[0]+passes[1])
	}
}

// Twenty mounts share the same lower layer, each with its own upper, each running a
// mixed workload at once: all finish, and each upper holds exactly its own changes.
func TestTwentyMountsShareLowers(t *testing.T) {
	const mounts = 20
	rounds := envCount(t, "COWFS_MOUNTS_OPS", 30)
	root := newScratch(t)
	shared := map[string]string{}
	for j := 0; j < 40; j++ {
		shared[fmt.Sprintf("dir%d/f%d", j%5, j)] = fmt.Sprintf("lower %d", j)
	}
	shared["common"] = "lower common"
	writeLowerFiles(t, root.lower, shared)
	lowerBefore := takeSnapshot(root.lower, lowerDir)
	type one struct {
		sd *scratchDirs
		d  *fuseDaemon
	}
	all := make([]one, mounts)
	for i := range all {
		sd := &scratchDirs{root: filepath.Join(root.root, fmt.Sprint("m", i)), lower: root.lower}
		sd.upper, sd.work, sd.mnt = filepath.Join(sd.root, "upper"), filepath.Join(sd.root, "work"), filepath.Join(sd.root, "mnt")
		for _, d := range []string{sd.upper, sd.work, sd.mnt} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() { cleanMount(t, sd.mnt) })
		all[i] = one{sd: sd, d: mountDaemon(t, sd.options(), sd.mnt)}
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, mounts)
	for i := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = mixedMountWork(all[i].sd.mnt, i, rounds)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	for i, err := range errs {
		if err != nil {
			t.Errorf("mount %d: %v", i, err)
		}
	}
	for i := range all {
		all[i].d.stop(t)
		want := snapshot{
			".":                              "dir",
			"common":                         fmt.Sprintf("file size=%d", len(fmt.Sprintf("mount %d common", i))),
			fmt.Sprintf("own%d", i):          "dir",
			fmt.Sprintf("dir%d", i%5):        "dir",
			fmt.Sprintf("dir%d/f%d", i%5, i): "whiteout",
		}
		for k := 0; k < rounds; k++ {
			if k%3 != 0 {
				want[fmt.Sprintf("own%d/k%d", i, k)] = fmt.Sprintf("file size=%d", len(fmt.Sprintf("mount %d round %d", i, k)))
			}
		}
		got := snapshot{}
		filepath.Walk(all[i].sd.upper, func(p string, fi os.FileInfo, err error) error {
			rel, _ := filepath.Rel(all[i].sd.upper, p)
			switch {
			case err != nil:
				got[rel] = err.Error()
			case fi.IsDir():
				got[rel] = "dir"
			case fi.Mode()&os.ModeCharDevice != 0:
				got[rel] = "whiteout"
			default:
				got[rel] = fmt.Sprintf("file size=%d", fi.Size())
			}
			return nil
		})
		if diff := diffSnapshots("want", want, "upper", got); diff != "" {
			t.Errorf("mount %d: its upper differs from its own changes:\n%s", i, diff)
		}
	}
	if diff := diffSnapshots("before", lowerBefore, "after", takeSnapshot(root.lower, lowerDir)); diff != "" {
		t.Errorf("the shared lower changed:\n%s", diff)
	}
	if !t.Failed() {
		figure(t, "%d mounts x %d rounds on shared lowers: all finished in %v, each upper exactly its own", mounts, rounds, elapsed.Round(time.Millisecond))
	}
}

// mixedMountWork is mount i's workload: its own directory of files made, renamed and
// removed, reads of every shared file, one shared file rewritten, one removed.
func mixedMountWork(mnt string, i, rounds int) error {
	own := filepath.Join(mnt, fmt.Sprintf("own%d", i))
	if err := os.Mkdir(own, 0o755); err != nil {
		return err
	}
	for k := 0; k < rounds; k++ {
		p := filepath.Join(own, fmt.Sprintf("tmp%d", k))
		if err := os.WriteFile(p, []byte(fmt.Sprintf("mount %d round %d", i, k)), 0o644); err != nil {
			return err
		}
		final := filepath.Join(own, fmt.Sprintf("k%d", k))
		if err := os.Rename(p, final); err != nil {
			return err
		}
		if k%3 == 0 {
			if err := os.Remove(final); err != nil {
				return err
			}
		}
		for j := 0; j < 40; j++ {
			b, err := os.ReadFile(filepath.Join(mnt, fmt.Sprintf("dir%d/f%d", j%5, j)))
			if j == i && k > 0 {
				if !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("removed dir%d/f%d: %v", j%5, j, err)
				}
				continue
			}
			if err != nil || string(b) != fmt.Sprintf("lower %d", j) {
				return fmt.Errorf("shared dir%d/f%d = %q, %v", j%5, j, b, err)
			}
		}
		if k == 0 {
			if err := os.WriteFile(filepath.Join(mnt, "common"), []byte(fmt.Sprintf("mount %d common", i)), 0o644); err != nil {
				return err
			}
			if err := os.Remove(filepath.Join(mnt, fmt.Sprintf("dir%d/f%d", i%5, i))); err != nil {
				return err
			}
		}
		if b, err := os.ReadFile(filepath.Join(mnt, "common")); err != nil || string(b) != fmt.Sprintf("mount %d common", i) {
			return fmt.Errorf("common = %q, %v", b, err)
		}
	}
	return nil
}

// A long mixed workload on one mount: the daemon's open descriptors and resident memory
// at the start (after a warm-up) and at the end, which must not grow beyond slack (a
// few descriptors; the lookup cache's bound and the Go heap's slack).
func TestLongRunNoLeaks(t *testing.T) {
	ops := envCount(t, "COWFS_LOAD_OPS", 50000)
	sd := newScratch(t)
	lowerFiles := map[string]string{}
	for j := 0; j < 400; j++ {
		lowerFiles[fmt.Sprintf("d%d/l%d", j%8, j)] = strings.Repeat(fmt.Sprint(j), 100)
	}
	writeLowerFiles(t, sd.lower, lowerFiles)
	d := mountDaemon(t, sd.options(), sd.mnt)
	r := rand.New(rand.NewSource(1))
	done := 0
	run := func(n int) {
		for ; n > 0 && !t.Failed(); n-- {
			longRunOp(t, r, sd.mnt)
			done++
		}
	}
	run(min(ops/20, 5000))
	fds0, rss0, err := daemonStatus(d.pid())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	step := max((ops-done)/10, 1)
	for done < ops && !t.Failed() {
		run(min(step, ops-done))
		fds, rss, _ := daemonStatus(d.pid())
		t.Logf("after %d operations: daemon fds %d, VmRSS %d KiB", done, fds, rss)
	}
	elapsed := time.Since(start)
	fds1, rss1, err := daemonStatus(d.pid())
	if err != nil {
		t.Fatal(err)
	}
	figure(t, "%d operations in %v: daemon fds %d -> %d, VmRSS %d -> %d KiB", done, elapsed.Round(time.Second), fds0, fds1, rss0, rss1)
	if fds1 > fds0+4 {
		t.Errorf("the daemon's open descriptors grew from %d to %d", fds0, fds1)
	}
	if rss1 > rss0+96<<10 {
		t.Errorf("the daemon's resident memory grew from %d to %d KiB", rss0, rss1)
	}
	figure(t, "daemon exit after fusermount3 -u: %v", d.stop(t).Round(time.Millisecond))
}

var longRunErrnoOK = []error{os.ErrNotExist, os.ErrExist, unix.ENOTEMPTY, unix.ENOTDIR, unix.EISDIR, unix.ENODATA}

// longRunOp does one random operation on a pool of names; expected failures of a random
// sequence (a name already gone or present) are fine, anything else fails the test.
func longRunOp(t *testing.T, r *rand.Rand, mnt string) {
	dir := filepath.Join(mnt, fmt.Sprintf("d%d", r.Intn(8)))
	name := filepath.Join(dir, fmt.Sprintf("n%d", r.Intn(64)))
	lower := filepath.Join(dir, fmt.Sprintf("l%d", r.Intn(400)))
	var err error
	switch r.Intn(14) {
	case 0:
		err = os.WriteFile(name, []byte("data"), 0o644)
	case 1:
		_, err = os.ReadFile(name)
	case 2:
		_, err = os.Lstat(name)
	case 3:
		err = os.Rename(name, filepath.Join(dir, fmt.Sprintf("n%d", r.Intn(64))))
	case 4:
		err = os.Remove(name)
	case 5:
		_, err = readDirNames(dir)
	case 6:
		err = os.Mkdir(name+"dir", 0o755)
	case 7:
		err = os.Remove(name + "dir")
	case 8:
		var f *os.File
		if f, err = os.OpenFile(lower, os.O_WRONLY|os.O_APPEND, 0); err == nil {
			_, err = f.WriteString("x")
			f.Close()
		}
	case 9:
		_, err = os.ReadFile(lower)
	case 10:
		err = unix.Lsetxattr(name, "user.k", []byte("v"), 0)
	case 11:
		_, err = getxattr(name, "user.k")
	case 12:
		err = os.Truncate(name, int64(r.Intn(10)))
	case 13:
		var f *os.File
		if f, err = os.Open(dir); err == nil {
			f.Readdirnames(5)
			f.Close()
		}
	}
	if err != nil && !slices.ContainsFunc(longRunErrnoOK, func(e error) bool { return errors.Is(err, e) }) {
		t.Errorf("long run: %v", err)
	}
}
