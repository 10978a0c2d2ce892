package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Concurrency cases run on kernel overlayfs and on cowfs, each with the default
// GOMAXPROCS and with GOMAXPROCS=1 in this process and in the FUSE daemon (which
// inherits the environment). They are not parallel: they set GOMAXPROCS.

const (
	writers   = 16
	blockSize = 4096
)

// forEachSetting runs f on both filesystems with both GOMAXPROCS settings.
func forEachSetting(t *testing.T, f func(t *testing.T, kind mountKind)) {
	requireMounts(t)
	for _, procs := range []int{0, 1} {
		name := "GOMAXPROCS=default"
		if procs == 1 {
			name = "GOMAXPROCS=1"
		}
		t.Run(name, func(t *testing.T) {
			if procs == 1 {
				t.Setenv("GOMAXPROCS", "1")
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
			}
			for _, kind := range []mountKind{kernelKind, fuseKind} {
				t.Run(string(kind), func(t *testing.T) { f(t, kind) })
			}
		})
	}
}

// sharedLower is the lower file the writers share: 2*writers blocks and a tail, every
// byte depending on its offset so a misplaced block shows.
func sharedLower() []byte {
	b := make([]byte, 2*writers*blockSize+100)
	for i := range b {
		b[i] = byte('a' + (i/7)%26)
	}
	return b
}

// writerBlock is what writer i writes, at offset writerOffset(i).
func writerBlock(i int) []byte {
	return bytes.Repeat([]byte{byte('A' + i)}, blockSize)
}

// writerOffset leaves a lower block untouched between every two writers' blocks.
func writerOffset(i int) int64 { return int64(2*i+1) * blockSize }

func expectedAfterWriters() []byte {
	want := sharedLower()
	for i := 0; i < writers; i++ {
		copy(want[writerOffset(i):], writerBlock(i))
	}
	return want
}

// checkSingleCopyUp asserts the outcome of the writers on f: the merged bytes, a single
// regular upper file with the same bytes, and an empty work dir.
func checkSingleCopyUp(t *testing.T, m *testMount) {
	t.Helper()
	want := expectedAfterWriters()
	got, err := os.ReadFile(filepath.Join(m.dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	diffBlocks(t, "merged f", got, want)
	m.unmount()
	names, err := readDirNames(m.upper)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"f"}) {
		t.Errorf("upper holds %q, want exactly [f]", names)
	}
	st := mustLstat(t, filepath.Join(m.upper, "f"))
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
		t.Errorf("upper f: mode %o nlink %d, want one regular file", st.Mode, st.Nlink)
	}
	up, err := os.ReadFile(filepath.Join(m.upper, "f"))
	if err != nil {
		t.Fatal(err)
	}
	diffBlocks(t, "upper f", up, want)
	checkWorkEmpty(t, m)
}

// checkWorkEmpty asserts that the unmounted m's work dir holds no leftover copy-up or
// temp. Kernel overlayfs keeps one whiteout there to hard-link new whiteouts to
// (ovl_whiteout, "share whiteout"), so on the kernel char 0/0 devices are allowed.
func checkWorkEmpty(t *testing.T, m *testMount) {
	t.Helper()
	work := filepath.Join(m.work, "work")
	names, err := readDirNames(work)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, n := range names {
		if m.kind == kernelKind {
			var st unix.Stat_t
			if unix.Lstat(filepath.Join(work, n), &st) == nil && isWhiteoutStat(&st) {
				continue
			}
		}
		left = append(left, n)
	}
	if len(left) > 0 {
		t.Errorf("work dir %s holds %q, want it empty", work, left)
	}
}

// diffBlocks reports which 4 KiB blocks of got differ from want.
func diffBlocks(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	var bad []int
	for off := 0; off < len(want) && off < len(got); off += blockSize {
		end := min(off+blockSize, len(want), len(got))
		if !bytes.Equal(got[off:end], want[off:end]) {
			bad = append(bad, off/blockSize)
		}
	}
	if len(bad) > 0 {
		t.Errorf("%s: blocks %v differ (odd blocks are the writers', even ones the lower's)", what, bad)
	}
}

// Sixteen goroutines open the same lower file for writing at once, without O_TRUNC, and
// each writes its own block: one copy-up, every block kept. A read-only descriptor
// opened before the writes keeps working.
func TestConcurrentWritersCopyUpOnce(t *testing.T) {
	forEachSetting(t, func(t *testing.T, kind mountKind) {
		m := newTestMount(t, kind, layer{"f": file(string(sharedLower()))}, layer{})
		path := filepath.Join(m.dir, "f")
		ro, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer ro.Close()

		var ready, wg sync.WaitGroup
		start := make(chan struct{})
		for i := 0; i < writers; i++ {
			ready.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				ready.Done()
				<-start
				f, err := os.OpenFile(path, os.O_WRONLY, 0)
				if err != nil {
					t.Errorf("writer %d: %v", i, err)
					return
				}
				if _, err := f.WriteAt(writerBlock(i), writerOffset(i)); err != nil {
					t.Errorf("writer %d: %v", i, err)
				}
				if err := f.Close(); err != nil {
					t.Errorf("writer %d: close: %v", i, err)
				}
			}()
		}
		ready.Wait()
		close(start)
		wg.Wait()

		// The descriptor opened before the copy-up: reads and fstat still work and give
		// the file's full length (kernel overlayfs re-opens the upper copy for it).
		buf := make([]byte, len(sharedLower())+10)
		n, err := ro.ReadAt(buf, 0)
		if n != len(sharedLower()) {
			t.Errorf("read on the fd opened before the writes: %d bytes, %v; want %d", n, err, len(sharedLower()))
		}
		if fi, err := ro.Stat(); err != nil || fi.Size() != int64(len(sharedLower())) {
			t.Errorf("fstat of the fd opened before the writes: %v, %v", fi, err)
		}
		roData := buf[:n]
		checkReadOnlyView(t, kind, roData)
		ro.Close()
		checkSingleCopyUp(t, m)
	})
}

// checkReadOnlyView compares what the old read-only fd reads with the kernel's answer
// from the same run order (the kernel runs first in forEachSetting).
func checkReadOnlyView(t *testing.T, kind mountKind, got []byte) {
	t.Helper()
	lower, after := sharedLower(), expectedAfterWriters()
	switch {
	case bytes.Equal(got, after):
		t.Logf("%s: the fd opened before the copy-up reads the written data", kind)
	case bytes.Equal(got, lower):
		t.Logf("%s: the fd opened before the copy-up reads the lower's data", kind)
	default:
		diffBlocks(t, "the fd opened before the writes", got, after)
	}
	if kind == kernelKind {
		roViewKernel = bytes.Equal(got, after)
	} else if os.Geteuid() == 0 {
		// As root cowfs passes lower files through: the old fd keeps reading the
		// lower copy (README, Intended differences; TestPassthroughLowerFiles).
		if !bytes.Equal(got, lower) {
			t.Errorf("cowfs's read-only fd passed through to the lower file does not read the lower copy")
		}
	} else if bytes.Equal(got, after) != roViewKernel {
		t.Errorf("cowfs's old read-only fd sees the written data: %v; kernel overlayfs: %v", bytes.Equal(got, after), roViewKernel)
	}
}

// roViewKernel is the kernel's answer in the current setting of forEachSetting.
var roViewKernel bool

// The same with sixteen processes (dd with conv=notrunc), started together.
func TestConcurrentWriterProcessesCopyUpOnce(t *testing.T) {
	dd, err := exec.LookPath("dd")
	if err != nil {
		t.Skip("dd is not installed: the processes are dd")
	}
	forEachSetting(t, func(t *testing.T, kind mountKind) {
		m := newTestMount(t, kind, layer{"f": file(string(sharedLower()))}, layer{})
		scratch := t.TempDir()
		goFile := filepath.Join(scratch, "go")
		cmds := make([]*exec.Cmd, writers)
		for i := range cmds {
			src := filepath.Join(scratch, fmt.Sprintf("block%d", i))
			if err := os.WriteFile(src, writerBlock(i), 0o644); err != nil {
				t.Fatal(err)
			}
			// Every process waits for the go file, then writes block 2i+1.
			script := `while [ ! -e "$1" ]; do sleep 0.001; done; exec "$2" if="$3" of="$4" bs=4096 seek="$5" count=1 conv=notrunc status=none`
			cmds[i] = exec.Command("sh", "-c", script, "sh", goFile, dd, src, filepath.Join(m.dir, "f"), fmt.Sprint(2*i+1))
			var out bytes.Buffer
			cmds[i].Stdout, cmds[i].Stderr = &out, &out
			if err := cmds[i].Start(); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(goFile, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		for i, c := range cmds {
			if err := c.Wait(); err != nil {
				t.Errorf("process %d: %v: %s", i, err, c.Stdout)
			}
		}
		checkSingleCopyUp(t, m)
	})
}

// Two directories, each worked in by two goroutines that create, rename and unlink 500
// files of their own and rename or unlink lower files; concurrent listings never show a
// name twice nor lose a name nobody touches, and the final listing is exact.
func TestConcurrentDirectoryWork(t *testing.T) {
	const (
		perWorker = 500
		lowerN    = 40
	)
	dirs := []string{"a", "b"}
	lower := layer{}
	for _, d := range dirs {
		for j := 0; j < lowerN; j++ {
			lower[fmt.Sprintf("%s/l%d", d, j)] = file("lower")
			lower[fmt.Sprintf("%s/keep%d", d, j)] = file("keep")
		}
	}
	// Worker w of a directory owns new files g<w>-<i> and lower files l<j> with j%2 == w.
	work := func(dir string, w int) (want []string, err error) {
		for i := 0; i < perWorker; i++ {
			name := filepath.Join(dir, fmt.Sprintf("g%d-%d", w, i))
			if err := os.WriteFile(name, []byte(name), 0o644); err != nil {
				return nil, err
			}
			if err := os.Rename(name, name+".r"); err != nil {
				return nil, err
			}
			if i%3 == 0 {
				if err := os.Remove(name + ".r"); err != nil {
					return nil, err
				}
			} else {
				want = append(want, filepath.Base(name)+".r")
			}
			if j := i; j < lowerN && j%2 == w {
				l := filepath.Join(dir, fmt.Sprintf("l%d", j))
				if j%4 < 2 {
					err = os.Remove(l)
				} else {
					err = os.Rename(l, l+".moved")
					want = append(want, filepath.Base(l)+".moved")
				}
				if err != nil {
					return nil, err
				}
			}
		}
		return want, nil
	}
	forEachSetting(t, func(t *testing.T, kind mountKind) {
		m := newTestMount(t, kind, lower, layer{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		want := map[string][]string{}
		stop := make(chan struct{})
		var readers sync.WaitGroup
		for _, d := range dirs {
			dir := filepath.Join(m.dir, d)
			for w := 0; w < 2; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					names, err := work(dir, w)
					if err != nil {
						t.Errorf("worker %d in %s: %v", w, d, err)
					}
					mu.Lock()
					want[d] = append(want[d], names...)
					mu.Unlock()
				}()
			}
			readers.Add(1)
			go func() {
				defer readers.Done()
				for passes := 0; ; passes++ {
					select {
					case <-stop:
						return
					default:
					}
					names, err := readDirNames(dir)
					if err != nil {
						t.Errorf("readdir %s during the work: %v", d, err)
						return
					}
					if dup := duplicates(names); len(dup) > 0 {
						t.Errorf("readdir %s pass %d lists %q twice", d, passes, dup)
						return
					}
					if missing := missingKeep(names, lowerN); len(missing) > 0 {
						t.Errorf("readdir %s pass %d lost untouched %q", d, passes, missing)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(stop)
		readers.Wait()
		checkListings := func(when string) {
			t.Helper()
			for _, d := range dirs {
				exp := slices.Clone(want[d])
				for j := 0; j < lowerN; j++ {
					exp = append(exp, fmt.Sprintf("keep%d", j))
				}
				sort.Strings(exp)
				got, err := readDirNames(filepath.Join(m.dir, d))
				if err != nil {
					t.Fatal(err)
				}
				if dup := duplicates(got); len(dup) > 0 {
					t.Errorf("%s: readdir of %s lists %q twice", when, d, dup)
				}
				if !slices.Equal(got, exp) {
					t.Errorf("%s: listing of %s: %s", when, d, setDiff(exp, got))
				}
			}
		}
		checkListings("after the work")
		m.unmount()
		checkWorkEmpty(t, m)
		m.mount()
		checkListings("after a remount")
	})
}

// missingKeep lists the untouched keep<j> names absent from sorted names.
func missingKeep(names []string, n int) []string {
	var missing []string
	for j := 0; j < n; j++ {
		k := fmt.Sprintf("keep%d", j)
		if _, ok := slices.BinarySearch(names, k); !ok {
			missing = append(missing, k)
		}
	}
	return missing
}

// setDiff describes how the sorted lists got and want differ.
func setDiff(want, got []string) string {
	var missing, extra []string
	for _, w := range want {
		if _, ok := slices.BinarySearch(got, w); !ok {
			missing = append(missing, w)
		}
	}
	for _, g := range got {
		if _, ok := slices.BinarySearch(want, g); !ok {
			extra = append(extra, g)
		}
	}
	return fmt.Sprintf("missing %q, extra %q", missing, extra)
}
