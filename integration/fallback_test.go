package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fallbacks are the formats cowfs writes where a privilege is missing, forced through
// COWFS_FORCE_FALLBACK (the probe treats the named privileges as missing).
var fallbacks = []struct {
	force string
	// check asserts that an upper written by cowfs uses this format only.
	check func(t *testing.T, upper string)
}{
	{"mknod", func(t *testing.T, upper string) { upperFormat(t, upper, false, "trusted.") }},
	{"trusted", func(t *testing.T, upper string) { upperFormat(t, upper, true, "user.") }},
	{"xattr", func(t *testing.T, upper string) { upperFormat(t, upper, true, "") }},
	{"mknod,xattr", func(t *testing.T, upper string) { upperFormat(t, upper, false, "") }},
}

// upperFormat fails t unless every marker in upper has the given form: whiteouts char
// 0/0 devices (charDev) or .wh. files; opaque markers overlay.opaque xattrs in
// namespace prefix, or .wh..wh..opq files (prefix "").
func upperFormat(t *testing.T, upper string, charDev bool, prefix string) {
	t.Helper()
	var found []string
	filepath.Walk(upper, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(upper, path)
		var st unix.Stat_t
		if unix.Lstat(path, &st) != nil {
			return nil
		}
		base := filepath.Base(path)
		switch {
		case isWhiteoutStat(&st):
			found = append(found, "char whiteout "+rel)
			if !charDev {
				t.Errorf("upper %s is a char 0/0 whiteout; this mount writes .wh. files", rel)
			}
		case base == opaqueFileName:
			found = append(found, "opaque file "+rel)
			if prefix != "" {
				t.Errorf("upper %s: an opaque file, where this mount writes %soverlay.opaque", rel, prefix)
			}
		case strings.HasPrefix(base, whPrefix):
			found = append(found, "whiteout file "+rel)
			if charDev {
				t.Errorf("upper %s is a .wh. file; this mount writes char 0/0 whiteouts", rel)
			}
		}
		names, _ := listxattr(path)
		for _, n := range names {
			if !strings.Contains(n, "overlay.opaque") {
				continue
			}
			found = append(found, n+" "+rel)
			if prefix == "" || !strings.HasPrefix(n, prefix) {
				t.Errorf("upper %s has %s; this mount writes opaque markers as %q", rel, n, prefix+"overlay.opaque")
			}
		}
		return nil
	})
	t.Logf("markers in the upper: %q", found)
}

// fallbackCases are whiteout and opaque-directory work whose result must not depend
// on the format the upper is written in.
func fallbackCases() []behaviourCase {
	lower := layer{"d/a": file("a"), "d/b": file("b"), "d/sub/s": file("s"), "f": file("f"), "g": file("g"), "e/x": file("x")}
	return []behaviourCase{
		{
			name:   "unlink, rmdir, re-create over the whiteouts and a remount",
			lowers: []layer{lower},
			op: ops(func(r *rec) {
				r.errno("unlink f", unix.Unlink(r.p("f")))
				r.errno("unlink d/a", unix.Unlink(r.p("d/a")))
				r.rmTree("e")
				r.errno("mkdir e", unix.Mkdir(r.p("e"), 0o755))
				r.errno("create e/y", os.WriteFile(r.p("e/y"), []byte("y"), 0o644))
				r.errno("create f", os.WriteFile(r.p("f"), []byte("again"), 0o644))
				r.errno("unlink f", unix.Unlink(r.p("f")))
				r.errno("mkdir f", unix.Mkdir(r.p("f"), 0o700))
				r.ls(".")
				r.ls("d")
				r.ls("e")
				r.gone("d/a", "e/x")
			}),
			afterRemount: func(t *testing.T, mnt string, _ result) result {
				return ops(func(r *rec) {
					r.ls(".")
					r.ls("d")
					r.ls("e")
					r.ls("f")
					r.gone("d/a", "e/x")
					r.errno("rmdir f", unix.Rmdir(r.p("f")))
					r.gone("f")
				})(t, mnt)
			},
			want: []string{"readdir e: [y]", "lstat e/x: ENOENT", "readdir d: [b sub]"},
		},
		{
			name:   "renames leave whiteouts, replace them, and make moved directories opaque",
			lowers: []layer{lower},
			op: ops(func(r *rec) {
				r.errno("rename f g", unix.Rename(r.p("f"), r.p("g")))
				r.errno("rename g f", unix.Rename(r.p("g"), r.p("f")))
				r.errno("mkdir n", unix.Mkdir(r.p("n"), 0o755))
				r.errno("create n/z", os.WriteFile(r.p("n/z"), []byte("z"), 0o644))
				r.errno("rmdir d/sub (full)", unix.Rmdir(r.p("d/sub")))
				r.rmTree("d/sub")
				r.errno("rename n d/sub", unix.Rename(r.p("n"), r.p("d/sub")))
				r.ls(".")
				r.ls("d/sub")
				r.gone("g", "d/sub/s", "n")
			}),
			afterRemount: func(t *testing.T, mnt string, _ result) result {
				return ops(func(r *rec) {
					r.ls(".")
					r.ls("d/sub")
					r.gone("g", "d/sub/s", "n")
				})(t, mnt)
			},
			want: []string{"readdir d/sub: [z]", "lstat g: ENOENT"},
		},
		{
			name:   "a file deleted in a removed and re-created directory stays deleted",
			lowers: []layer{lower},
			op: ops(func(r *rec) {
				r.rmTree("d")
				r.errno("mkdir d", unix.Mkdir(r.p("d"), 0o755))
				r.errno("create d/a", os.WriteFile(r.p("d/a"), []byte("a2"), 0o644))
				r.errno("create d/new", os.WriteFile(r.p("d/new"), []byte("n"), 0o644))
				r.errno("unlink d/a", unix.Unlink(r.p("d/a")))
				r.errno("unlink d/new", unix.Unlink(r.p("d/new")))
				r.gone("d/a", "d/b", "d/new", "d/sub")
			}),
			afterRemount: func(t *testing.T, mnt string, _ result) result {
				return ops(func(r *rec) { r.ls("d"); r.gone("d/a", "d/b", "d/new", "d/sub") })(t, mnt)
			},
			want: []string{"readdir d: []"},
		},
	}
}

// TestFallbackFormats runs whiteout and opaque-directory work with each fallback format
// forced, against the kernel (which writes its own format): the same results, merged
// trees and uppers (the snapshot reads every format). Then TestFallbackFormatOnDisk
// checks that cowfs really wrote the fallback format.
func TestFallbackFormats(t *testing.T) {
	for _, fb := range fallbacks {
		t.Run(fb.force, func(t *testing.T) {
			cases := fallbackCases()
			for i := range cases {
				cases[i].opts.env = []string{"COWFS_FORCE_FALLBACK=" + fb.force}
			}
			runCases(t, cases)
		})
	}
}

// TestFallbackFormatOnDisk runs the same work on cowfs alone with each fallback forced
// and checks the upper holds that format and no other.
func TestFallbackFormatOnDisk(t *testing.T) {
	for _, fb := range fallbacks {
		for _, c := range fallbackCases() {
			t.Run(fb.force+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				m := newTestMountOpts(t, fuseKind, mountOpts{env: []string{"COWFS_FORCE_FALLBACK=" + fb.force}}, append(c.lowers, layer{})...)
				c.op(t, m.dir)
				m.remount()
				c.afterRemount(t, m.dir, result{})
				m.unmount()
				fb.check(t, m.upper)
			})
		}
	}
}
