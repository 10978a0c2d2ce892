package integration

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// result is what an operation saw, one "label: value" line per step: errnos
// ("ok", "ENOENT"), data read, derived facts ("same ino: true"). It is
// compared line by line between kernel and cowfs. Raw inode numbers and times
// never go in a result; keep them in kept, which is not compared.
type result struct {
	lines []string
	kept  map[string]uint64
}

// opFunc is a case's operation on the merged view at mnt.
type opFunc func(t *testing.T, mnt string) result

// behaviourCase is fixture layers + an operation + optional expectations.
type behaviourCase struct {
	name   string
	lowers []layer // topmost first
	upper  layer
	op     opFunc
	// afterRemount, if set, runs after the mount is unmounted and mounted
	// again on the same upper; it sees the first result (with kept values).
	afterRemount func(t *testing.T, mnt string, before result) result
	// want lists result lines that must appear, on both filesystems.
	want []string
	// checkUpper asserts the exact on-disk format in the upper dir (which the
	// snapshot normalises), on both filesystems.
	checkUpper func(t *testing.T, upper string)
	opts       mountOpts
	// fuseDiffers, when set, says why the FUSE result may legitimately differ
	// from the kernel's for this case; the comparison is then only logged.
	fuseDiffers string
	// upperDiffers, when set, says why only the upper directories may differ
	// (results and merged trees are still compared); the upper diff is logged.
	upperDiffers string
}

// reapHold makes cowfs hold every deferred unlink until the unmount (fs/reap.go), for
// behaviour cases and differential runs: a file whose unlink was deferred by mistake
// then shows its links in every run, not only when the reaper happens to be slow
// (differential seed 25 failed in CI that way, once).
const reapHold = "COWFS_TEST_REAP_HOLD=1"

// outcome is what one run of a case left behind.
type outcome struct {
	res    result
	merged snapshot
	upper  snapshot
}

// runCases runs every case on kernel overlayfs and on the FUSE program and
// compares results, merged trees and upper dirs.
func runCases(t *testing.T, cases []behaviourCase) {
	requireMounts(t)
	seen := map[string]bool{}
	for _, c := range cases {
		if seen[c.name] {
			t.Fatalf("duplicate case name %q", c.name)
		}
		seen[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var ref *outcome
			t.Run(string(kernelKind), func(t *testing.T) { ref = runOnce(t, kernelKind, c) })
			t.Run(string(fuseKind), func(t *testing.T) {
				got := runOnce(t, fuseKind, c)
				if ref == nil {
					t.Skip("the kernel run did not finish; nothing to compare with")
				}
				compareOutcomes(t, c, ref, got)
			})
		})
	}
}

func runOnce(t *testing.T, kind mountKind, c behaviourCase) *outcome {
	layers := append(append([]layer{}, c.lowers...), c.upper)
	if layers[len(layers)-1] == nil {
		layers[len(layers)-1] = layer{}
	}
	mo := c.opts
	if kind == fuseKind {
		mo.env = append(slices.Clone(mo.env), reapHold)
	}
	m := newTestMountOpts(t, kind, mo, layers...)
	lowersBefore := make([]snapshot, len(m.lowers))
	for i, l := range m.lowers {
		lowersBefore[i] = takeSnapshot(l, lowerDir)
	}
	res := guard(t, func() result { return c.op(t, m.dir) })
	if c.afterRemount != nil {
		m.remount()
		more := guard(t, func() result { return c.afterRemount(t, m.dir, res) })
		res.lines = append(res.lines, "-- remount --")
		res.lines = append(res.lines, more.lines...)
	}
	o := &outcome{res: res, merged: takeSnapshot(m.dir, mergedView)}
	m.unmount()
	o.upper = takeSnapshot(m.upper, upperDir)
	for i, l := range m.lowers {
		if d := diffSnapshots("before", lowersBefore[i], "after", takeSnapshot(l, lowerDir)); d != "" {
			t.Errorf("lower layer %d changed:\n%s", i, d)
		}
	}
	for _, w := range c.want {
		if !res.has(w) {
			t.Errorf("result lacks %q; got:\n%s", w, res)
		}
	}
	if c.checkUpper != nil {
		c.checkUpper(t, m.upper)
	}
	if testing.Verbose() {
		t.Logf("result:\n%s\nmerged:\n%s\nupper:\n%s", res, o.merged, o.upper)
	}
	return o
}

// guard turns a panic in an operation into a test failure, so that the
// test binary lives on to run the cleanups that unmount.
func guard(t *testing.T, f func() result) (r result) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("operation panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return f()
}

func compareOutcomes(t *testing.T, c behaviourCase, k, f *outcome) {
	report := t.Errorf
	if c.fuseDiffers != "" {
		report = t.Logf
	}
	if d := diffLines(k.res.lines, f.res.lines); d != "" {
		report("results differ (kernel=-, cowfs=+):\n%s", d)
	}
	if d := diffSnapshots("kernel", k.merged, "cowfs", f.merged); d != "" {
		report("merged trees differ:\n%s", d)
	}
	if d := diffSnapshots("kernel", k.upper, "cowfs", f.upper); d != "" {
		if c.upperDiffers != "" {
			t.Logf("upper dirs differ, as allowed (%s):\n%s", c.upperDiffers, d)
		} else {
			report("upper dirs differ:\n%s", d)
		}
	}
	if c.fuseDiffers != "" {
		t.Logf("differences allowed: %s", c.fuseDiffers)
	}
}

// diffLines aligns two results step by step.
func diffLines(a, b []string) string {
	var out strings.Builder
	n := max(len(a), len(b))
	for i := 0; i < n; i++ {
		var x, y string
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			fmt.Fprintf(&out, "  step %d:\n  - %s\n  + %s\n", i, x, y)
		}
	}
	return out.String()
}

func (r result) String() string { return "  " + strings.Join(r.lines, "\n  ") }

func (r result) has(line string) bool {
	for _, l := range r.lines {
		if l == line {
			return true
		}
	}
	return false
}

// errnoString is "ok" for nil and the errno's name ("ENOENT") otherwise.
func errnoString(err error) string {
	if err == nil {
		return "ok"
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return n
		}
		return fmt.Sprintf("errno%d", int(e))
	}
	return err.Error()
}

// rec records the steps of an operation; ops(...) turns a recording
// function into an opFunc.
type rec struct {
	t   *testing.T
	mnt string
	res result
}

func ops(f func(r *rec)) opFunc {
	return func(t *testing.T, mnt string) result {
		r := &rec{t: t, mnt: mnt, res: result{kept: map[string]uint64{}}}
		f(r)
		return r.res
	}
}

// p is the merged path of a fixture path.
func (r *rec) p(path string) string { return join(r.mnt, path) }

// errno records the outcome of a call.
func (r *rec) errno(label string, err error) { r.val(label, errnoString(err)) }

// val records a value.
func (r *rec) val(label string, v any) {
	r.res.lines = append(r.res.lines, fmt.Sprintf("%s: %v", label, v))
}

// keep stores a value that is not compared (an inode number, a time).
func (r *rec) keep(label string, v uint64) { r.res.kept[label] = v }

// read records a file's content or the errno of reading it.
func (r *rec) read(path string) {
	b, err := os.ReadFile(r.p(path))
	if err != nil {
		r.errno("read "+path, err)
		return
	}
	r.val("read "+path, fmt.Sprintf("%q", b))
}

// stat records the user-visible attributes of path (not times, not st_ino).
func (r *rec) stat(path string) unix.Stat_t {
	var st unix.Stat_t
	if err := unix.Lstat(r.p(path), &st); err != nil {
		r.errno("lstat "+path, err)
		return st
	}
	desc, _ := describe(r.p(path), &st, mergedView)
	r.val("lstat "+path, desc)
	return st
}

// ls records a directory's sorted entries.
func (r *rec) ls(path string) {
	names, err := readDirNames(r.p(path))
	if err != nil {
		r.errno("readdir "+path, err)
		return
	}
	r.val("readdir "+path, names)
}

// write writes data at off without truncating; it records the errno.
func (r *rec) write(path string, off int64, data string) {
	f, err := os.OpenFile(r.p(path), os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteAt([]byte(data), off)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	r.errno(fmt.Sprintf("write %s@%d", path, off), err)
}

// lstat returns the stat of a path under root; failing the test on error.
func mustLstat(t *testing.T, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatalf("lstat %s: %v", path, err)
	}
	return st
}

// upperIs asserts the exact on-disk form of an upper entry: "whiteout"
// (char 0/0), "opaque" (trusted.overlay.opaque=y), "absent", "file", "dir".
func upperIs(path, want string) func(t *testing.T, upper string) {
	return func(t *testing.T, upper string) {
		t.Helper()
		full := filepath.Join(upper, filepath.FromSlash(path))
		var st unix.Stat_t
		err := unix.Lstat(full, &st)
		got := ""
		switch {
		case err != nil:
			got = "absent"
		case want == "opaque":
			v, _ := getxattr(full, opaqueXattr)
			got = "not opaque"
			if v == "y" {
				got = "opaque"
			}
		case isWhiteoutStat(&st):
			got = "whiteout"
		default:
			got = typeName(st.Mode & unix.S_IFMT)
		}
		if got != want {
			t.Errorf("upper %s: got %s, want %s", path, got, want)
		}
	}
}

// allOf runs several upper checks.
func allOf(checks ...func(t *testing.T, upper string)) func(t *testing.T, upper string) {
	return func(t *testing.T, upper string) {
		t.Helper()
		for _, c := range checks {
			c(t, upper)
		}
	}
}
