package copyup_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cowfs/cowfs/copyup"
	"github.com/cowfs/cowfs/layers"
	"golang.org/x/sys/unix"
)

// lowerLayer is the index of the only lower layer in the stacks these tests open.
const lowerLayer = 1

// oldTime is the atime and mtime fixtures get, with nanoseconds to catch truncation.
var oldTime = time.Date(2020, 5, 6, 7, 8, 9, 123456789, time.UTC)

// env is a writable stack of one lower over an upper, with the copier under test.
type env struct {
	lower, upper, work string // work is WORKDIR/work, where temps must live
	stack              *layers.Stack
	c                  *copyup.Copier
}

func newEnv(t *testing.T) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: copy-up sets owners, set-id bits, trusted.* and security.* xattrs")
	}
	base := t.TempDir()
	e := &env{lower: filepath.Join(base, "lower"), upper: filepath.Join(base, "upper")}
	workdir := filepath.Join(base, "work")
	for _, d := range []string{e.lower, e.upper, workdir} {
		must(t, os.Mkdir(d, 0o755))
	}
	s, err := layers.Open(layers.Options{Lowers: []string{e.lower}, Upper: e.upper, Work: workdir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	e.stack, e.work = s, filepath.Join(workdir, layers.WorkSubdir)
	e.c = copyup.New(s)
	return e
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func lstat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Lstat(p, &st))
	return st
}

func setTimes(t *testing.T, p string, at time.Time) {
	t.Helper()
	ts := unix.NsecToTimespec(at.UnixNano())
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW))
}

func xattrs(t *testing.T, p string) map[string]string {
	t.Helper()
	sz, err := unix.Llistxattr(p, nil)
	must(t, err)
	m := map[string]string{}
	if sz == 0 {
		return m
	}
	buf := make([]byte, sz)
	n, err := unix.Llistxattr(p, buf)
	must(t, err)
	for _, a := range splitNul(buf[:n]) {
		vsz, err := unix.Lgetxattr(p, a, nil)
		must(t, err)
		v := make([]byte, vsz)
		vn, err := unix.Lgetxattr(p, a, v)
		must(t, err)
		m[a] = string(v[:vn])
	}
	return m
}

func splitNul(b []byte) []string {
	var out []string
	for len(b) > 0 {
		i := slices.Index(b, 0)
		if i < 0 {
			i = len(b)
		}
		if i > 0 {
			out = append(out, string(b[:i]))
		}
		if i == len(b) {
			break
		}
		b = b[i+1:]
	}
	return out
}

// assertEmptyDir fails unless dir holds nothing: the work dir after every copy-up.
func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	must(t, err)
	if len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("%s holds %q, want it empty", dir, names)
	}
}

func assertAbsent(t *testing.T, p string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err == nil {
		t.Errorf("%s exists (mode %o size %d), want no entry", p, st.Mode, st.Size)
	} else if err != unix.ENOENT {
		t.Errorf("lstat %s: %v", p, err)
	}
}

// extents is the SEEK_DATA/SEEK_HOLE map of the file at p: [start, end) data ranges.
func extents(t *testing.T, p string) [][2]int64 {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	must(t, err)
	defer unix.Close(fd)
	var st unix.Stat_t
	must(t, unix.Fstat(fd, &st))
	var out [][2]int64
	for off := int64(0); off < st.Size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break
		}
		must(t, err)
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		must(t, err)
		out = append(out, [2]int64{data, hole})
		off = hole
	}
	return out
}
