package integration

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// mtimeIsFixture records whether path's mtime is still the fixture's.
func (r *rec) mtimeIsFixture(path string) {
	var st unix.Stat_t
	if err := unix.Lstat(r.p(path), &st); err != nil {
		r.errno("mtime "+path, err)
		return
	}
	r.val("mtime of "+path+" is the lower's", st.Mtim.Sec == fixtureTime.Unix() && st.Mtim.Nsec == 0)
}

// sparseUpper asserts that the upper copy of path kept its holes.
func sparseUpper(path string) func(t *testing.T, upper string) {
	return func(t *testing.T, upper string) {
		t.Helper()
		st := mustLstat(t, join(upper, path))
		if used := st.Blocks * 512; used*4 > st.Size {
			t.Errorf("upper %s uses %d bytes on disk for %d bytes: holes were filled", path, used, st.Size)
		}
	}
}

func TestCopyUp(t *testing.T) {
	const ten = "0123456789"
	runCases(t, []behaviourCase{
		{
			name:   "writing at an offset without O_TRUNC copies up and keeps the surrounding bytes",
			lowers: []layer{{"d/f": file(ten)}},
			op: ops(func(r *rec) {
				r.write("d/f", 3, "AB")
				r.read("d/f")
			}),
			want:       []string{`read d/f: "012AB56789"`},
			checkUpper: upperIs("d/f", "file"),
		},
		{
			name:   "writing past the end of a lower file copies up and extends it",
			lowers: []layer{{"f": file(ten)}},
			op: ops(func(r *rec) {
				r.write("f", 12, "Z")
				r.read("f")
			}),
			want: []string{`read f: "0123456789\x00\x00Z"`},
		},
		{
			name:   "truncating a lower file copies up the kept prefix",
			lowers: []layer{{"f": file(ten)}},
			op: ops(func(r *rec) {
				r.errno("truncate f 4", unix.Truncate(r.p("f"), 4))
				r.read("f")
			}),
			want: []string{`read f: "0123"`},
		},
		{
			name:   "chmod of a lower file copies it up with its data",
			lowers: []layer{{"f": file(ten).mode(0o640).owner(1000, 1000)}},
			op: ops(func(r *rec) {
				r.errno("chmod f", unix.Chmod(r.p("f"), 0o600))
				r.stat("f")
				r.read("f")
				r.mtimeIsFixture("f")
			}),
			checkUpper: upperIs("f", "file"),
		},
		{
			name:   "chown of a lower file copies it up",
			lowers: []layer{{"f": file(ten).mode(0o2755)}},
			op: ops(func(r *rec) {
				r.errno("chown f", unix.Lchown(r.p("f"), 1000, 1001))
				r.stat("f")
			}),
		},
		{
			name:   "utimes of a lower file copies it up with the new times",
			lowers: []layer{{"f": file(ten)}},
			op: ops(func(r *rec) {
				ts := []unix.Timespec{{Sec: 1000, Nsec: 5}, {Sec: 2000, Nsec: 7}}
				r.errno("utimensat f", unix.UtimesNanoAt(unix.AT_FDCWD, r.p("f"), ts, 0))
				var st unix.Stat_t
				r.errno("stat f", unix.Lstat(r.p("f"), &st))
				r.val("atime", st.Atim)
				r.val("mtime", st.Mtim)
			}),
			want: []string{"mtime: {2000 7}"},
		},
		{
			name:   "setxattr and removexattr on a lower file copy it up with its other xattrs",
			lowers: []layer{{"f": file(ten).xattr("user.a", "1").xattr("user.b", "2")}},
			op: ops(func(r *rec) {
				r.errno("setxattr user.c", unix.Setxattr(r.p("f"), "user.c", []byte("3"), 0))
				r.errno("removexattr user.a", unix.Removexattr(r.p("f"), "user.a"))
				r.val("listxattr", xattrString(r.p("f"), mergedView))
			}),
			want: []string{`listxattr: user.b="2",user.c="3"`},
		},
		{
			name:   "hard-linking a lower file copies it up and links it in the upper layer",
			lowers: []layer{{"d/f": file(ten)}},
			op: ops(func(r *rec) {
				r.errno("link d/f e/g", unix.Link(r.p("d/f"), r.p("d/g")))
				r.stat("d/f")
				r.stat("d/g")
				r.write("d/g", 0, "X")
				r.read("d/f")
			}),
			want: []string{`read d/f: "X123456789"`},
		},
		{
			name: "copy-up of a deep file copies its parents first with their metadata",
			lowers: []layer{{
				"a":         dir().mode(0o750).owner(10, 20).xattr("user.level", "a"),
				"a/b":       dir().mode(0o711).owner(30, 40),
				"a/b/c":     dir().mode(0o700).xattr("user.level", "c"),
				"a/b/c/f":   file(ten),
				"a/b/other": file("not copied"),
			}},
			op: ops(func(r *rec) {
				r.write("a/b/c/f", 9, "!")
				r.read("a/b/c/f")
				r.mtimeIsFixture("a/b/c")
				r.mtimeIsFixture("a")
			}),
			checkUpper: allOf(upperIs("a/b/c/f", "file"), upperIs("a/b/other", "absent")),
		},
		{
			name:   "holes in a lower file stay holes after copy-up",
			lowers: []layer{{"sp": sparse(32<<20, map[int64]string{0: "head", 16 << 20: "middle", 32<<20 - 4: "tail"})}},
			op: ops(func(r *rec) {
				r.write("sp", 1, "E")
				r.val("data map", dataMap(r.p("sp")))
				var st unix.Stat_t
				r.errno("stat sp", unix.Stat(r.p("sp"), &st))
				r.val("mostly holes", st.Blocks*512 < st.Size/4)
			}),
			checkUpper: sparseUpper("sp"),
		},
		{
			name: "copy-up keeps mode, owner, mtime and every xattr including security.capability",
			lowers: []layer{{"bin": file("#!/bin/true\n").mode(0o750).owner(1000, 1000).
				xattr("user.origin", "lower").xattr("security.capability", capability())}},
			op: ops(func(r *rec) {
				f, err := os.OpenFile(r.p("bin"), os.O_WRONLY, 0)
				r.errno("open bin for writing", err)
				if err == nil {
					f.Close()
				}
				r.errno("setxattr user.extra", unix.Setxattr(r.p("bin"), "user.extra", []byte("x"), 0))
				r.stat("bin")
				r.mtimeIsFixture("bin")
			}),
			checkUpper: func(t *testing.T, upper string) {
				st := mustLstat(t, join(upper, "bin"))
				if st.Mtim.Sec != fixtureTime.Unix() {
					t.Errorf("upper bin mtime %d, want the lower's %d", st.Mtim.Sec, fixtureTime.Unix())
				}
				if v, err := getxattr(join(upper, "bin"), "security.capability"); err != nil || v != capability() {
					t.Errorf("upper bin security.capability = %q, %v; want it copied", v, err)
				}
			},
		},
		{
			name:   "a read-only fd opened before copy-up reads what the kernel shows after a write through another fd",
			lowers: []layer{{"f": file(ten)}},
			op: ops(func(r *rec) {
				ro, err := os.Open(r.p("f"))
				r.errno("open ro", err)
				if err != nil {
					return
				}
				defer ro.Close()
				buf := make([]byte, 4)
				n, err := ro.ReadAt(buf, 0)
				r.val("ro read before", string(buf[:n]))
				r.write("f", 0, "NEW")
				n, err = ro.ReadAt(buf, 0)
				r.errno("ro pread after", err)
				r.val("ro read after", string(buf[:n]))
				r.read("f")
			}),
			want: []string{`read f: "NEW3456789"`},
			// Kernel parity for a read-only fd that goes through the daemon; one passed
			// through to the lower file keeps reading it (TestPassthroughLowerFiles).
			opts: mountOpts{env: []string{"COWFS_DATAPATH=writeback"}},
		},
		hardLinkWriteCase("", mountOpts{}),
		hardLinkWriteCase(", through the daemon", mountOpts{env: []string{"COWFS_DATAPATH=writeback"}}),
		{
			name: "a lower directory copies up empty with its metadata when a child is created",
			lowers: []layer{{
				"d":     dir().mode(0o1775).owner(7, 8).xattr("user.d", "dir"),
				"d/old": file("stays lower"),
				"d/sub": dir(),
			}},
			op: ops(func(r *rec) {
				r.errno("create d/new", os.WriteFile(r.p("d/new"), []byte("n"), 0o644))
				r.stat("d")
				r.ls("d")
			}),
			checkUpper: allOf(upperIs("d/old", "absent"), upperIs("d/sub", "absent"), upperIs("d/new", "file")),
		},
		{
			name:   "chmod of a lower directory copies up only the directory",
			lowers: []layer{{"d": dir().mode(0o755), "d/f": file("f")}},
			op: ops(func(r *rec) {
				r.errno("chmod d", unix.Chmod(r.p("d"), 0o700))
				r.stat("d")
				r.ls("d")
			}),
			checkUpper: allOf(upperIs("d", "dir"), upperIs("d/f", "absent")),
		},
		{
			name:   "copy-up does not change the parent's mtime as seen through the mount",
			lowers: []layer{{"d/f": file(ten), "d/g": file("g")}},
			op: ops(func(r *rec) {
				r.errno("chmod d/f", unix.Chmod(r.p("d/f"), 0o600))
				r.write("d/g", 0, "G")
				r.mtimeIsFixture("d")
				r.mtimeIsFixture(".")
			}),
			want: []string{"mtime of d is the lower's: true"},
		},
		{
			name:   "writing one name of a hard-linked lower file leaves the other name's data alone",
			lowers: []layer{{"a": file(ten), "b": hardlink("a")}},
			op: ops(func(r *rec) {
				r.write("a", 0, "A")
				r.read("a")
				r.read("b")
				r.stat("a")
				r.stat("b")
			}),
		},
		{
			name:   "chown of a lower symlink copies up the link itself",
			lowers: []layer{{"s": symlink("target"), "target": file("t")}},
			op: ops(func(r *rec) {
				r.errno("lchown s", unix.Lchown(r.p("s"), 5, 6))
				r.stat("s")
				r.stat("target")
			}),
			checkUpper: allOf(upperIs("s", "symlink"), upperIs("target", "absent")),
		},
		{
			name:   "chmod of a lower fifo copies up a fifo",
			lowers: []layer{{"p": fifo()}},
			op: ops(func(r *rec) {
				r.errno("chmod p", unix.Chmod(r.p("p"), 0o600))
				r.stat("p")
			}),
			checkUpper: upperIs("p", "fifo"),
		},
	})
}

// hardLinkWriteCase writes through an fd of one name of a lower hard link, whose copy-up
// gives the name a number of its own (a new node). A file written through the old node
// changed the object behind the new node's back, whose size the kernel kept for an hour
// (the name showed 0 bytes), and the fd's fchmod failed with ENOENT.
func hardLinkWriteCase(suffix string, opts mountOpts) behaviourCase {
	return behaviourCase{
		name:   "data written through an fd of a lower hard link shows through its name at once" + suffix,
		lowers: []layer{{"h": file("lower h"), "d/h": hardlink("h")}},
		opts:   opts,
		op: ops(func(r *rec) {
			fd, err := unix.Open(r.p("d/h"), unix.O_RDWR, 0)
			r.errno("open d/h", err)
			if err != nil {
				return
			}
			var st unix.Stat_t
			r.errno("lstat d/h while open", unix.Lstat(r.p("d/h"), &st))
			_, err = unix.Pwrite(fd, []byte("hello world"), 0)
			r.errno("write d/h", err)
			r.errno("fchmod d/h", unix.Fchmod(fd, 0o600))
			unix.Close(fd)
			r.stat("d/h")
			r.read("d/h")
			r.read("h")
			r.val("links of h", r.nlink("h"))
		}),
		want: []string{`read d/h: "hello world"`, `read h: "lower h"`, "links of h: 2"},
	}
}
