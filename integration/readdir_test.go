package integration

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// getdentsNames reads at most one buffer of bytes of entries from the directory fd.
func getdentsNames(t *testing.T, fd, size int) []string {
	t.Helper()
	buf := make([]byte, size)
	n, err := unix.Getdents(fd, buf)
	if err != nil {
		t.Fatalf("getdents: %v", err)
	}
	var names []string
	for off := 0; off+19 <= n; {
		reclen := int(binary.LittleEndian.Uint16(buf[off+16:]))
		name := buf[off+19 : off+reclen]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		if s := string(name); s != "." && s != ".." {
			names = append(names, s)
		}
		off += reclen
	}
	return names
}

// TestReaddirDuringChanges reads a large merged directory in small pieces while names in
// it are removed and created between the pieces: every name that did not change shows
// exactly once (POSIX leaves only the changed names open), on the kernel and on cowfs;
// and telldir/seekdir (lseek on the directory) come back to the same place.
func TestReaddirDuringChanges(t *testing.T) {
	const files = 600
	lower := layer{}
	for i := 0; i < files; i++ {
		lower[fmt.Sprintf("d/lower-%04d", i)] = file("x")
	}
	upper := layer{"d/upper-only": file("u")}
	for _, kind := range []mountKind{kernelKind, fuseKind} {
		t.Run(string(kind), func(t *testing.T) {
			m := newTestMount(t, kind, lower, upper)
			dir := filepath.Join(m.dir, "d")
			fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			seen := map[string]int{}
			first := getdentsNames(t, fd, 1024)
			for _, n := range first {
				seen[n]++
			}
			// Change names both behind and ahead of the reader.
			changed := map[string]bool{}
			for i := 0; i < files; i += 7 {
				name := fmt.Sprintf("lower-%04d", i)
				if err := os.Remove(filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
				changed[name] = true
				nn := fmt.Sprintf("new-%04d", i)
				if err := os.WriteFile(filepath.Join(dir, nn), nil, 0o644); err != nil {
					t.Fatal(err)
				}
				changed[nn] = true
			}
			mark, err := unix.Seek(fd, 0, 1)
			if err != nil {
				t.Fatal(err)
			}
			var afterMark []string
			for {
				names := getdentsNames(t, fd, 1024)
				if len(names) == 0 {
					break
				}
				if afterMark == nil {
					afterMark = names
				}
				for _, n := range names {
					seen[n]++
				}
			}
			for i := 0; i < files; i++ {
				name := fmt.Sprintf("lower-%04d", i)
				if !changed[name] && seen[name] != 1 {
					t.Errorf("%s: listed %d times, want once", name, seen[name])
				}
			}
			if seen["upper-only"] != 1 {
				t.Errorf("upper-only: listed %d times, want once", seen["upper-only"])
			}
			for n, c := range seen {
				if c > 1 {
					t.Errorf("%s listed %d times", n, c)
				}
			}
			// seekdir back to the mark gives the same names again.
			if _, err := unix.Seek(fd, mark, 0); err != nil {
				t.Fatal(err)
			}
			// (A buffer may hold a different number of entries the second time.)
			again := getdentsNames(t, fd, 1024)
			k := min(len(again), len(afterMark))
			if k == 0 || fmt.Sprint(again[:k]) != fmt.Sprint(afterMark[:k]) {
				t.Errorf("after seekdir to %d: %v, want %v", mark, again, afterMark)
			}
		})
	}
}

// A process that only reads names gets, after its first few directories, listings
// without the files' attributes (fs/walk.go): the kernel looks each file up when
// someone asks for it, and it then has the right attributes. A process that reads the
// files it lists gets them with every listing; one that stats them pays one
// directory's lookups at most.
func TestListingsOfANameOnlyWalk(t *testing.T) {
	const dirs, files = 10, 6
	top, bottom := layer{}, layer{}
	type want struct {
		mode os.FileMode
		size int64
	}
	wants := map[string]want{}
	for d := 0; d < dirs; d++ {
		dn := fmt.Sprintf("d%02d", d)
		top[dn], bottom[dn] = dir(), dir()
		for f := 0; f < files; f++ {
			name := fmt.Sprintf("%s/f%d", dn, f)
			content := strings.Repeat("x", d*files+f)
			l := bottom
			if f%2 == 0 {
				l = top // half of them from each layer
			}
			l[name] = file(content).mode(0o600 + uint32(f))
			wants[name] = want{0o600 + os.FileMode(f), int64(len(content))}
		}
	}
	tests := []struct {
		name     string
		walk     string // a shell command; MNT is the mount
		min, max int    // lookups of files, in the walk and a stat of each file after it
	}{
		{name: "find lists the later directories without the files' attributes",
			walk: `find "$MNT" >/dev/null`, min: (dirs + 1 - walkListingsBeforeLazy) * files, max: dirs * files},
		{name: "tar gets the files' attributes with every listing",
			walk: `tar -cf - -C "$MNT" . | cat >/dev/null`, max: 0},
		{name: "du looks up one directory's files at most",
			walk: `du -a "$MNT" >/dev/null`, max: files},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newTestMountOpts(t, fuseKind, mountOpts{log: true}, top, bottom, layer{})
			walk := exec.Command("sh", "-c", tc.walk)
			walk.Env = append(os.Environ(), "MNT="+m.dir)
			if out, err := walk.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", tc.walk, err, out)
			}
			for name, w := range wants {
				fi, err := os.Lstat(filepath.Join(m.dir, name))
				if err != nil || fi.Mode() != w.mode || fi.Size() != w.size {
					t.Errorf("%s after the walk: %v, %v; want mode %v, size %d", name, fi, err, w.mode, w.size)
				}
			}
			m.unmount() // the daemon has written its log
			lookups := regexp.MustCompile(`(?m)\brx \d+: LOOKUP n\d+ +"f\d"`).FindAllString(readLog(m.logPath), -1)
			if len(lookups) < tc.min || len(lookups) > tc.max {
				t.Errorf("%d lookups of files, want %d to %d", len(lookups), tc.min, tc.max)
			}
		})
	}
}

// walkListingsBeforeLazy is fs.walkListingsBeforeLazy: how many directories a process
// lists with full entries before it may get lazy ones.
const walkListingsBeforeLazy = 4
