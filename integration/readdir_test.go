package integration

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
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
