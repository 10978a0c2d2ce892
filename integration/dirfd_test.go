package integration

import (
	"testing"

	"golang.org/x/sys/unix"
)

// The daemon keeps an fd of each upper directory it used (fs/dirfd.go) and creates,
// looks up and changes entries through it. Each case uses a directory's fd, then
// removes, replaces or moves the directory, and uses the name again: every new entry
// must land in the directory the name shows now, in the merged view and in the upper
// directory, as on the kernel.
func TestUpperDirFds(t *testing.T) {
	create := func(r *rec, path string) {
		fd, err := unix.Open(r.p(path), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
		r.errno("create "+path, err)
		if err == nil {
			unix.Close(fd)
		}
	}
	lower := []layer{{"below": file("below")}}
	runCases(t, []behaviourCase{
		{
			name:   "a directory removed and made again at its name takes the new entries",
			lowers: lower,
			upper:  layer{"d": dir(), "d/f": file("f")},
			op: ops(func(r *rec) {
				create(r, "d/a")
				r.errno("chmod d/a", unix.Chmod(r.p("d/a"), 0o600))
				r.errno("unlink d/a", unix.Unlink(r.p("d/a")))
				r.errno("unlink d/f", unix.Unlink(r.p("d/f")))
				r.errno("rmdir d", unix.Rmdir(r.p("d")))
				r.errno("mkdir d", unix.Mkdir(r.p("d"), 0o755))
				create(r, "d/b")
				r.errno("chmod d/b", unix.Chmod(r.p("d/b"), 0o640))
				r.ls("d")
				r.stat("d/b")
			}),
			checkUpper: upperIs("d/b", "file"),
		},
		{
			name:   "a directory removed while an fd holds it, and made again, takes the new entries",
			lowers: lower,
			upper:  layer{"d": dir()},
			op: ops(func(r *rec) {
				create(r, "d/a")
				held, err := unix.Open(r.p("d"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
				r.errno("open d", err)
				r.errno("unlink d/a", unix.Unlink(r.p("d/a")))
				r.errno("rmdir d", unix.Rmdir(r.p("d")))
				r.errno("mkdir d", unix.Mkdir(r.p("d"), 0o755))
				create(r, "d/b")
				r.errno("mkdir d/sub", unix.Mkdir(r.p("d/sub"), 0o755))
				create(r, "d/sub/c")
				r.ls("d")
				r.ls("d/sub")
				if err == nil {
					_, err := unix.Openat(held, "x", unix.O_CREAT|unix.O_WRONLY, 0o644)
					r.errno("create in the removed d through the held fd", err)
					unix.Close(held)
				}
			}),
			want:       []string{"create in the removed d through the held fd: ENOENT"},
			checkUpper: allOf(upperIs("d/b", "file"), upperIs("d/sub/c", "file")),
		},
		{
			name:   "a directory renamed away, with a new one at its old name",
			lowers: lower,
			upper:  layer{"a": dir()},
			op: ops(func(r *rec) {
				create(r, "a/1")
				r.errno("rename a b", unix.Rename(r.p("a"), r.p("b")))
				r.errno("mkdir a", unix.Mkdir(r.p("a"), 0o755))
				create(r, "a/2")
				create(r, "b/3")
				r.ls("a")
				r.ls("b")
			}),
			checkUpper: allOf(upperIs("b/1", "file"), upperIs("a/2", "file"), upperIs("b/3", "file")),
		},
		{
			name:   "a directory renamed over an empty one takes its name's entries",
			lowers: lower,
			upper:  layer{"a": dir(), "b": dir()},
			op: ops(func(r *rec) {
				create(r, "a/y")
				create(r, "b/x")
				r.errno("unlink b/x", unix.Unlink(r.p("b/x")))
				r.errno("rename a b", unix.Rename(r.p("a"), r.p("b")))
				create(r, "b/z")
				r.ls("b")
				r.errno("stat a", unix.Access(r.p("a"), unix.F_OK))
			}),
			want:       []string{"stat a: ENOENT"},
			checkUpper: allOf(upperIs("b/y", "file"), upperIs("b/z", "file")),
		},
		{
			name:   "two directories exchanged keep their own entries",
			lowers: lower,
			upper:  layer{"a": dir(), "b": dir()},
			op: ops(func(r *rec) {
				create(r, "a/1")
				create(r, "b/2")
				r.errno("exchange a b", unix.Renameat2(unix.AT_FDCWD, r.p("a"), unix.AT_FDCWD, r.p("b"), unix.RENAME_EXCHANGE))
				create(r, "a/3")
				create(r, "b/4")
				r.ls("a")
				r.ls("b")
			}),
			checkUpper: allOf(upperIs("b/1", "file"), upperIs("a/2", "file"), upperIs("a/3", "file"), upperIs("b/4", "file")),
		},
		{
			name:   "a lower directory copied up, removed and made again is opaque and takes the new entries",
			lowers: []layer{{"l/x": file("x")}},
			op: ops(func(r *rec) {
				create(r, "l/new")
				r.errno("unlink l/new", unix.Unlink(r.p("l/new")))
				r.errno("unlink l/x", unix.Unlink(r.p("l/x")))
				r.errno("rmdir l", unix.Rmdir(r.p("l")))
				r.errno("mkdir l", unix.Mkdir(r.p("l"), 0o755))
				create(r, "l/n2")
				r.ls("l")
			}),
			checkUpper: upperIs("l/n2", "file"),
		},
		{
			name:   "a tree removed and made again takes the new entries at every level",
			lowers: lower,
			upper:  layer{"p": dir(), "p/q": dir()},
			op: ops(func(r *rec) {
				create(r, "p/q/f")
				create(r, "p/g")
				r.rmTree("p")
				r.errno("mkdir p", unix.Mkdir(r.p("p"), 0o755))
				r.errno("mkdir p/q", unix.Mkdir(r.p("p/q"), 0o755))
				create(r, "p/q/h")
				create(r, "p/i")
				r.ls("p")
				r.ls("p/q")
			}),
			checkUpper: allOf(upperIs("p/q/h", "file"), upperIs("p/i", "file")),
		},
	})
}
