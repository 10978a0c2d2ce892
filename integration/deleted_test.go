package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// rmTree removes path in the merged view the way rm -rf does (children first).
func (r *rec) rmTree(path string) {
	r.errno("rm -rf "+path, os.RemoveAll(r.p(path)))
}

// gone records, for each name, that it is found neither by lstat nor by open.
func (r *rec) gone(names ...string) {
	for _, n := range names {
		r.stat(n)
		f, err := os.Open(r.p(n))
		if err == nil {
			f.Close()
		}
		r.errno("open "+n, err)
	}
}

// deletedNames are the names the case below must never bring back: every name of
// the lower d, and the new files deleted in the re-created d.
var deletedNames = []string{"d/a", "d/b", "d/sub", "d/sub/s", "d/new1", "d/sub2/n"}

// TestDeletedStayDeleted is the "deleted files stay deleted": a lower directory
// removed with rm -rf and re-created (so opaque in the upper), new files made and
// some deleted, a lower name made again and deleted. On the mount and on a fresh mount
// of the same upper, no deleted name is found by name or listed. fuse-overlayfs 1.10
// fails this; podman diff and podman commit read exactly this upper.
func TestDeletedStayDeleted(t *testing.T) {
	lower := layer{"d/a": file("a"), "d/b": file("b"), "d/sub/s": file("s"), "keep": file("k")}
	work := func(r *rec) {
		r.rmTree("d")
		r.errno("mkdir d", unix.Mkdir(r.p("d"), 0o755))
		for _, n := range []string{"d/new1", "d/new2", "d/a"} {
			r.errno("create "+n, os.WriteFile(r.p(n), []byte(n), 0o644))
		}
		r.errno("mkdir d/sub2", unix.Mkdir(r.p("d/sub2"), 0o755))
		r.errno("create d/sub2/n", os.WriteFile(r.p("d/sub2/n"), []byte("n"), 0o644))
		r.errno("unlink d/new1", unix.Unlink(r.p("d/new1")))
		r.errno("unlink d/a (made again)", unix.Unlink(r.p("d/a")))
		r.errno("unlink d/sub2/n", unix.Unlink(r.p("d/sub2/n")))
	}
	look := func(r *rec) {
		r.gone(deletedNames...)
		r.ls("d")
		r.ls("d/sub2")
		r.read("d/new2")
	}
	want := []string{
		"lstat d/a: ENOENT", "open d/a: ENOENT", "lstat d/b: ENOENT", "lstat d/sub: ENOENT",
		"lstat d/sub/s: ENOENT", "lstat d/new1: ENOENT", "open d/new1: ENOENT",
		"readdir d: [new2 sub2]", "readdir d/sub2: []",
	}
	runCases(t, []behaviourCase{
		{
			name:   "a file deleted in a removed and re-created directory stays deleted after a remount",
			lowers: []layer{lower},
			op:     ops(func(r *rec) { work(r); look(r) }),
			afterRemount: func(t *testing.T, mnt string, _ result) result {
				return ops(look)(t, mnt)
			},
			want:       append(want, "-- remount --"),
			checkUpper: allOf(upperIs("d", "opaque"), upperIs("d/a", "absent"), upperIs("d/new1", "absent")),
		},
		{
			name:   "names deleted before a remount stay deleted when the directory is removed again after it",
			lowers: []layer{lower, {"d/b": file("older b"), "d/c": file("c")}},
			op:     ops(func(r *rec) { work(r); look(r) }),
			afterRemount: func(t *testing.T, mnt string, _ result) result {
				return ops(func(r *rec) {
					look(r)
					r.rmTree("d")
					r.errno("mkdir d", unix.Mkdir(r.p("d"), 0o700))
					r.gone(append(deletedNames, "d/new2", "d/c")...)
					r.ls("d")
				})(t, mnt)
			},
			want: append(want, "-- remount --", "lstat d/c: ENOENT", "readdir d: []"),
		},
		{
			name: "the only file of a lower opaque directory, removed, stays removed and the layer below stays hidden",
			lowers: []layer{
				{"op": dir().opaqueDir(), "op/only": file("only"), "op2": dir().opaqueByFile(), "op2/only": file("only")},
				{"op/hidden": file("h"), "op2/hidden": file("h")},
			},
			op: ops(func(r *rec) {
				r.errno("unlink op/only", unix.Unlink(r.p("op/only")))
				r.errno("unlink op2/only", unix.Unlink(r.p("op2/only")))
				r.gone("op/only", "op/hidden", "op2/only", "op2/hidden")
				r.ls("op")
				r.ls("op2")
			}),
			afterRemount: func(t *testing.T, mnt string, _ result) result {
				return ops(func(r *rec) {
					r.gone("op/only", "op/hidden", "op2/only", "op2/hidden")
					r.ls("op")
					r.ls("op2")
					r.errno("rmdir op", unix.Rmdir(r.p("op")))
					r.errno("mkdir op", unix.Mkdir(r.p("op"), 0o755))
					r.gone("op/only", "op/hidden")
				})(t, mnt)
			},
			want: []string{"readdir op: []", "lstat op/hidden: ENOENT", "rmdir op: ok"},
		},
	})
}

// TestDeletedStayDeletedOnDisk checks the same upper directory from a third mount: the
// kernel reads cowfs's upper, and the other way round, to the same tree.
func TestDeletedStayDeletedOnDisk(t *testing.T) {
	requireMounts(t)
	lower := layer{"d/a": file("a"), "d/b": file("b"), "d/sub/s": file("s"), "keep": file("k")}
	var trees [2]snapshot
	for i, kind := range []mountKind{kernelKind, fuseKind} {
		m := newTestMount(t, kind, lower, layer{})
		ops(func(r *rec) {
			r.rmTree("d")
			r.errno("mkdir d", unix.Mkdir(r.p("d"), 0o755))
			r.errno("create d/x", os.WriteFile(r.p("d/x"), []byte("x"), 0o644))
			r.errno("create d/a", os.WriteFile(r.p("d/a"), []byte("a2"), 0o644))
			r.errno("unlink d/x", unix.Unlink(r.p("d/x")))
			r.errno("unlink d/a", unix.Unlink(r.p("d/a")))
			r.errno("create d/y", os.WriteFile(r.p("d/y"), []byte("y"), 0o644))
		})(t, m.dir)
		m.unmount()
		// Mount the upper this kind wrote with the other kind.
		other := fuseKind
		if kind == fuseKind {
			other = kernelKind
		}
		o := newTestMount(t, other, lower, layer{})
		o.unmount()
		if err := os.RemoveAll(o.upper); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("cp", "-a", m.upper, o.upper).CombinedOutput(); err != nil {
			t.Fatalf("cp -a: %v\n%s", err, out)
		}
		o.mount()
		for _, n := range []string{"d/a", "d/b", "d/x", "d/sub", "d/sub/s"} {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(o.dir, n), &st); err != unix.ENOENT {
				t.Errorf("%s's upper read by %s: lstat %s: %v, want ENOENT", kind, other, n, err)
			}
		}
		trees[i] = takeSnapshot(o.dir, mergedView)
		o.unmount()
	}
	if d := diffSnapshots("kernel's upper", trees[0], "cowfs's upper", trees[1]); d != "" {
		t.Errorf("the two uppers read back differently:\n%s", d)
	}
}
