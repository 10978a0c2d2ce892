package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// ino returns path's inode number, 0 on error (recorded).
func (r *rec) ino(path string) uint64 {
	var st unix.Stat_t
	if err := unix.Lstat(r.p(path), &st); err != nil {
		r.errno("lstat "+path, err)
		return 0
	}
	return st.Ino
}

// nlink is the link count of path (0 when it cannot be had; the error is recorded).
func (r *rec) nlink(path string) uint64 {
	var st unix.Stat_t
	if err := unix.Lstat(r.p(path), &st); err != nil {
		r.errno("lstat "+path, err)
		return 0
	}
	return uint64(st.Nlink)
}

// keepInos stores the inode numbers of paths, uncompared, for afterRemount.
func (r *rec) keepInos(paths ...string) {
	for _, p := range paths {
		r.keep("ino "+p, r.ino(p))
	}
}

// sameInos records, per path, whether st_ino equals the kept value.
func (r *rec) sameInos(before result, paths ...string) {
	for _, p := range paths {
		r.val("st_ino of "+p+" unchanged", r.ino(p) == before.kept["ino "+p])
	}
}

// distinctInodes records whether all entries under the mount have distinct
// (st_dev, st_ino) pairs, apart from names that are hard links of each other.
func (r *rec) distinctInodes() {
	seen := map[[2]uint64][]string{}
	filepath.Walk(r.mnt, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		k := [2]uint64{uint64(st.Dev), st.Ino}
		rel, _ := filepath.Rel(r.mnt, p)
		seen[k] = append(seen[k], rel)
		return nil
	})
	var clashes []string
	for _, names := range seen {
		if len(names) > 1 {
			clashes = append(clashes, strings.Join(names, "="))
		}
	}
	r.val("inode clashes", fmt.Sprint(len(clashes)))
}

func TestInodes(t *testing.T) {
	runCases(t, []behaviourCase{
		{
			name: "files with the same inode number in different layers get distinct inodes in the merged view",
			lowers: []layer{
				{"a": file("a"), "da/x": file("x")},
				{"b": file("b"), "db/y": file("y")},
			},
			upper: layer{"c": file("c"), "dc/z": file("z")},
			opts:  mountOpts{tmpfsLayers: true},
			op: ops(func(r *rec) {
				r.distinctInodes()
			}),
			want: []string{"inode clashes: 0"},
		},
		{
			name:   "hard-linked lower files share an inode and nlink in the merged view",
			lowers: []layer{{"a": file("shared"), "d/b": hardlink("a"), "c": file("other")}},
			op: ops(func(r *rec) {
				r.val("a and d/b same st_ino", r.ino("a") == r.ino("d/b"))
				r.val("a and c same st_ino", r.ino("a") == r.ino("c"))
				r.stat("a")
				r.stat("d/b")
				r.keepInos("a")
				r.write("a", 0, "S")
				// The copy is a file of its own now, with a number of its own.
				r.val("after copy-up a and d/b same st_ino", r.ino("a") == r.ino("d/b"))
				r.val("after copy-up a has nlink 1 and d/b nlink 2", r.nlink("a") == 1 && r.nlink("d/b") == 2)
				r.stat("a")
				r.stat("d/b")
				r.read("d/b")
			}),
		},
		{
			name:   "st_ino survives copy-up of files, directories and symlinks",
			lowers: []layer{{"f": file("f"), "d/inner": file("i"), "s": symlink("f"), "e": dir()}},
			op: ops(func(r *rec) {
				r.keepInos("f", "d", "d/inner", "s", "e")
				r.write("f", 0, "F")
				r.errno("create d/new", os.WriteFile(r.p("d/new"), nil, 0o644))
				r.errno("chmod d/inner", unix.Chmod(r.p("d/inner"), 0o600))
				r.errno("lchown s", unix.Lchown(r.p("s"), 1, 1))
				r.errno("chmod e", unix.Chmod(r.p("e"), 0o700))
				r.sameInos(r.res, "f", "d", "d/inner", "s", "e")
			}),
			want: []string{"st_ino of f unchanged: true", "st_ino of d unchanged: true"},
		},
		{
			name:   "st_ino is stable across a remount of the same upper",
			lowers: []layer{{"lower": file("l"), "copied": file("c"), "d/x": file("x")}},
			op: ops(func(r *rec) {
				r.write("copied", 0, "C")
				r.errno("create new", os.WriteFile(r.p("new"), []byte("n"), 0o644))
				r.errno("mkdir nd", unix.Mkdir(r.p("nd"), 0o755))
				r.keepInos("lower", "copied", "new", "d", "d/x", "nd")
			}),
			afterRemount: func(t *testing.T, mnt string, before result) result {
				return ops(func(r *rec) {
					r.sameInos(before, "lower", "copied", "new", "d", "d/x", "nd")
					r.read("copied")
				})(t, mnt)
			},
			want: []string{"st_ino of lower unchanged: true", "st_ino of copied unchanged: true", "st_ino of new unchanged: true"},
		},
		{
			// The ancestors a copy-up brings along take the attributes and the number of
			// their topmost lower copy (fs copyUpNotify takes them from the node).
			name: "directories copied up for a file inside keep their attributes and st_ino across a remount",
			lowers: []layer{
				{"p": dir().mode(0o750).owner(1, 2), "p/q": dir().mode(0o700)},
				{"p": dir(), "p/q": dir(), "p/q/f": file("f")},
			},
			op: ops(func(r *rec) {
				r.keepInos("p", "p/q")
				r.errno("chmod p/q/f", unix.Chmod(r.p("p/q/f"), 0o600))
				r.stat("p")
				r.stat("p/q")
				r.sameInos(r.res, "p", "p/q")
			}),
			afterRemount: func(t *testing.T, mnt string, before result) result {
				return ops(func(r *rec) {
					r.sameInos(before, "p", "p/q")
					r.stat("p")
					r.stat("p/q")
				})(t, mnt)
			},
			want: []string{"st_ino of p unchanged: true", "st_ino of p/q unchanged: true"},
		},
		{
			name: "directory and file nlink match the kernel's",
			lowers: []layer{
				{"m/s1": dir(), "m/f": file("f"), "lonly/s": dir(), "h1": file("h"), "h2": hardlink("h1")},
				{"m/s2": dir(), "m/s1/x": dir()},
			},
			upper: layer{"m/s3": dir(), "uonly/a": dir(), "uonly/b": dir()},
			op: ops(func(r *rec) {
				for _, p := range []string{".", "m", "m/s1", "m/s2", "m/s3", "lonly", "uonly", "h1"} {
					r.stat(p)
				}
				r.errno("mkdir m/s4", unix.Mkdir(r.p("m/s4"), 0o755))
				r.errno("link h1 h3", unix.Link(r.p("h1"), r.p("h3")))
				r.stat("m")
				r.stat("h1")
				r.stat("h2")
			}),
		},
	})
}
