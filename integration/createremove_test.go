package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCreateRemove covers the short paths of creation and removal (fs/create.go,
// fs/remove.go): an object is made in place first and a whiteout looked at only when
// the name is taken; it is chowned only when it did not get the caller's owner; an
// upper-only directory is removed without being listed first. Each case compares with
// the kernel, so the short paths must keep every behaviour of the long ones.
func TestCreateRemove(t *testing.T) {
	lower := layer{"a": file("lower a"), "d/x": file("x")}
	runCases(t, []behaviourCase{
		{
			name:   "names over char whiteouts in a directory only the upper holds",
			lowers: []layer{lower},
			upper:  layer{"u": dir(), "u/f": whiteout(), "u/sub": whiteout(), "u/l": whiteout(), "u/p": whiteout()},
			op: ops(func(r *rec) {
				fd, err := unix.Open(r.p("u/f"), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o640)
				r.errno("create u/f", err)
				if err == nil {
					unix.Close(fd)
				}
				r.errno("mkdir u/sub", unix.Mkdir(r.p("u/sub"), 0o750))
				r.errno("symlink u/l", unix.Symlink("target", r.p("u/l")))
				r.errno("mkfifo u/p", unix.Mkfifo(r.p("u/p"), 0o600))
				_, err = unix.Open(r.p("u/f"), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o640)
				r.errno("create u/f again", err)
				r.errno("mkdir u/sub again", unix.Mkdir(r.p("u/sub"), 0o750))
				r.ls("u")
				for _, n := range []string{"u/f", "u/sub", "u/l", "u/p"} {
					r.stat(n)
				}
			}),
			want:       []string{"create u/f again: EEXIST", "mkdir u/sub again: EEXIST"},
			checkUpper: allOf(upperIs("u/f", "file"), upperIs("u/sub", "dir"), upperIs("u/l", "symlink"), upperIs("u/p", "fifo")),
		},
		{
			name:   "new objects keep their set-ID bits and a set-group-ID parent's group",
			lowers: []layer{lower},
			upper:  layer{"sg": dir().mode(0o2775).owner(0, 1234), "plain": dir()},
			op: ops(func(r *rec) {
				for _, d := range []string{"sg", "plain"} {
					fd, err := unix.Open(r.p(d+"/suid"), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o4755)
					r.errno("create "+d+"/suid", err)
					if err == nil {
						unix.Close(fd)
					}
					r.errno("mkdir "+d+"/sub", unix.Mkdir(r.p(d+"/sub"), 0o755))
					r.errno("mknod "+d+"/fifo", unix.Mknod(r.p(d+"/fifo"), unix.S_IFIFO|0o2644, 0))
					r.errno("symlink "+d+"/l", unix.Symlink("x", r.p(d+"/l")))
					for _, n := range []string{"suid", "sub", "fifo", "l"} {
						r.stat(d + "/" + n)
					}
				}
			}),
		},
		{
			name:   "rmdir of upper-only directories: empty, holding a file, holding a directory",
			lowers: []layer{lower},
			upper: layer{
				"empty": dir(), "full": dir(), "full/f": file("f"),
				"nested": dir(), "nested/in": dir(),
			},
			op: ops(func(r *rec) {
				r.errno("rmdir empty", unix.Rmdir(r.p("empty")))
				r.errno("rmdir full", unix.Rmdir(r.p("full")))
				r.errno("rmdir nested", unix.Rmdir(r.p("nested")))
				r.errno("unlink full", unix.Unlink(r.p("full")))
				r.errno("rmdir full/f", unix.Rmdir(r.p("full/f")))
				r.errno("unlink full/f", unix.Unlink(r.p("full/f")))
				r.errno("rmdir full now", unix.Rmdir(r.p("full")))
				r.errno("rmdir nested/in", unix.Rmdir(r.p("nested/in")))
				r.errno("rmdir nested now", unix.Rmdir(r.p("nested")))
				r.ls(".")
			}),
			want: []string{"rmdir empty: ok", "rmdir full: ENOTEMPTY", "rmdir nested: ENOTEMPTY",
				"unlink full: EISDIR", "rmdir full/f: ENOTDIR", "rmdir full now: ok", "rmdir nested now: ok"},
			checkUpper: allOf(upperIs("empty", "absent"), upperIs("full", "absent")),
		},
		{
			name:   "removing in a merged directory still whites out, in an upper-only one never",
			lowers: []layer{lower},
			op: ops(func(r *rec) {
				r.errno("mkdir new", unix.Mkdir(r.p("new"), 0o755))
				r.errno("mkdir new/sub", unix.Mkdir(r.p("new/sub"), 0o755))
				fd, err := unix.Open(r.p("new/f"), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
				r.errno("create new/f", err)
				if err == nil {
					unix.Close(fd)
				}
				r.errno("unlink new/f", unix.Unlink(r.p("new/f")))
				r.errno("rmdir new/sub", unix.Rmdir(r.p("new/sub")))
				r.errno("unlink d/x", unix.Unlink(r.p("d/x")))
				r.errno("rmdir d", unix.Rmdir(r.p("d")))
				r.errno("unlink a", unix.Unlink(r.p("a")))
				r.ls(".")
				r.ls("new")
			}),
			checkUpper: allOf(upperIs("new/f", "absent"), upperIs("new/sub", "absent"), upperIs("d", "whiteout"),
				upperIs("a", "whiteout")),
		},
		{
			// cowfs unlinks a file nobody holds later (fs/reap.go); these must not see it.
			// The reaper holds every unlink until the unmount (reapHold), so a file
			// deferred by mistake would still show its links here.
			name:   "an unlinked file held open has no links at once, and a hard link's count drops at once",
			lowers: []layer{lower},
			upper:  layer{"u": dir(), "u/open": file("still here"), "u/g": file("g"), "u/plain": file("p")},
			op: ops(func(r *rec) {
				fd, err := unix.Open(r.p("u/open"), unix.O_RDONLY, 0)
				r.errno("open u/open", err)
				r.errno("link u/g u/g2", unix.Link(r.p("u/g"), r.p("u/g2")))
				r.errno("unlink u/open", unix.Unlink(r.p("u/open")))
				if err == nil {
					r.fstat(fd)
					r.fdRead(fd, "read u/open after its unlink")
					unix.Close(fd)
				}
				r.errno("unlink u/g", unix.Unlink(r.p("u/g")))
				r.val("links of u/g2", r.nlink("u/g2"))
				r.errno("unlink u/plain", unix.Unlink(r.p("u/plain")))
				r.errno("unlink u/plain again", unix.Unlink(r.p("u/plain")))
				r.ls("u")
			}),
			want: []string{"unlink u/plain again: ENOENT", "links of u/g2: 1",
				"read u/open after its unlink: " + dataString([]byte("still here"))},
			checkUpper: allOf(upperIs("u/open", "absent"), upperIs("u/g", "absent"), upperIs("u/plain", "absent"),
				upperIs("u/g2", "file")),
		},
		{
			// cowfs removes an empty upper directory later too (rmdirUpper); held until
			// the unmount (reapHold), it must look gone at once, also to an open fd.
			name:   "an upper directory removed while open has no links, and one that holds a file stays",
			lowers: []layer{lower},
			upper:  layer{"u": dir(), "u/e": dir(), "u/full": dir(), "u/full/f": file("f")},
			op: ops(func(r *rec) {
				fd, err := unix.Open(r.p("u/e"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
				r.errno("open u/e", err)
				r.errno("rmdir u/e", unix.Rmdir(r.p("u/e")))
				if err == nil {
					var st unix.Stat_t
					r.errno("fstat u/e", unix.Fstat(fd, &st))
					r.val("links of open u/e", st.Nlink)
					unix.Close(fd)
				}
				r.errno("rmdir u/e again", unix.Rmdir(r.p("u/e")))
				r.errno("rmdir u/full", unix.Rmdir(r.p("u/full")))
				r.errno("mkdir u/e anew", unix.Mkdir(r.p("u/e"), 0o700))
				r.errno("create u/e/g", unix.Mknod(r.p("u/e/g"), unix.S_IFREG|0o644, 0))
				r.ls("u")
				r.ls("u/e")
			}),
			want: []string{"links of open u/e: 0", "rmdir u/e again: ENOENT", "rmdir u/full: ENOTEMPTY",
				"readdir u/e: [g]"},
			checkUpper: allOf(upperIs("u/e", "dir"), upperIs("u/e/g", "file"), upperIs("u/full/f", "file")),
		},
		{
			// Copying up a lower hard link breaks the link and gives the name a number of
			// its own, so a new node. The open that copies it up must end on the new node
			// (cowfs answers ESTALE, the kernel retries): a file open on the old one is
			// one the unlink does not see (differential seed 25).
			name:   "an unlinked lower hard link held open since its copy-up has no links at once",
			lowers: []layer{{"h": file("lower h"), "d/h": hardlink("h")}},
			op: ops(func(r *rec) {
				fd, err := unix.Open(r.p("d/h"), unix.O_RDWR, 0)
				r.errno("open d/h for writing", err)
				if err != nil {
					return
				}
				defer unix.Close(fd)
				r.errno("unlink d/h", unix.Unlink(r.p("d/h")))
				_, err = unix.Pwrite(fd, []byte("written"), 0)
				r.errno("write d/h after its unlink", err)
				r.fstat(fd)
				r.val("links of h", r.nlink("h"))
			}),
			want:       []string{"fstat: file 0644 0:0 nlink=0 size=7", "links of h: 2"},
			checkUpper: allOf(upperIs("d/h", "whiteout")),
		},
	})
}

// TestDeferredUnlinks removes more files and empty directories than the reaper queues
// (fs/reap.go), with the reaper holding them all until the unmount: every name is gone
// when rm and rmdir return, and the unmount leaves the work dir empty.
func TestDeferredUnlinks(t *testing.T) {
	requireMounts(t)
	m := newTestMountOpts(t, fuseKind, mountOpts{env: []string{reapHold}}, layer{"a": file("lower a")}, layer{})
	const n = 700 // more than reapQueue (256): the full-queue path runs too
	for i := range n {
		if err := os.WriteFile(filepath.Join(m.dir, fmt.Sprintf("f%d", i)), []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(m.dir, fmt.Sprintf("d%d", i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if err := os.Remove(filepath.Join(m.dir, fmt.Sprintf("f%d", i))); err != nil {
			t.Fatal(err)
		}
		if err := unix.Rmdir(filepath.Join(m.dir, fmt.Sprintf("d%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	names, err := readDirNames(m.dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"a"}) {
		t.Errorf("merged dir holds %d names after the removals, want only a", len(names))
	}
	if up, err := readDirNames(m.upper); err != nil || len(up) != 0 {
		t.Errorf("upper holds %q (%v), want nothing", up, err)
	}
	m.unmount()
	checkWorkEmpty(t, m)
}
