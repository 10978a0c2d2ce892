package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// metacopyOpts mounts cowfs with metacopy=on and the kernel with metacopy=on, which it
// takes only with redirect_dir=on (it refuses redirect_dir=off). The cases below never
// rename a directory, so the kernel's redirects only show where a case says so.
var metacopyOpts = mountOpts{extra: "metacopy=on", kernel: "redirect_dir=on,index=off,metacopy=on"}

// metacopyLower is the fixture: small and big files (data, holes), a hard-linked file,
// an empty file, a file with a capability, a directory and a symlink.
func metacopyLower() layer {
	return layer{
		"f":     file("lower f data"),
		"big":   sparse(3<<20+5, map[int64]string{0: "head", 2 << 20: "middle", 3<<20 + 1: "tail"}),
		"empty": file(""),
		"cap":   file("#!/bin/true\n").mode(0o755).xattr("security.capability", capability()),
		"h1":    file("linked"),
		"h2":    hardlink("h1"),
		"d/x":   file("x in d").xattr("user.keep", "1"),
		"l":     symlink("f"),
	}
}

// statBlocks records a file's attributes and st_blocks (the kernel shows a metacopy
// file's data's blocks).
func (r *rec) statBlocks(path string) {
	st := r.stat(path)
	r.val("blocks "+path, st.Blocks)
}

// fstatMode records the mode fstat shows through a read-only fd.
func (r *rec) fstatMode(path string) {
	fd, err := unix.Open(r.p(path), unix.O_RDONLY, 0)
	r.errno("open ro "+path, err)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	r.errno("fstat "+path, unix.Fstat(fd, &st))
	r.val("fstat mode "+path, fmt.Sprintf("%o", st.Mode))
}

func TestMetacopy(t *testing.T) {
	past := []unix.Timespec{unix.NsecToTimespec(time.Date(2019, 1, 2, 3, 4, 5, 6, time.UTC).UnixNano()),
		unix.NsecToTimespec(time.Date(2019, 1, 2, 3, 4, 5, 7, time.UTC).UnixNano())}
	meta := func(name string, op func(r *rec)) behaviourCase {
		return behaviourCase{name: name, lowers: []layer{metacopyLower()}, opts: metacopyOpts, op: ops(op)}
	}
	cases := []behaviourCase{
		meta("chmod of lower files copies up only their metadata", func(r *rec) {
			for _, n := range []string{"f", "big", "empty", "d/x"} {
				r.errno("chmod "+n, unix.Chmod(r.p(n), 0o600))
				r.statBlocks(n)
				r.read(n)
			}
			r.fstatMode("big")
		}),
		meta("chown of a lower file copies up its metadata", func(r *rec) {
			r.errno("chown f", unix.Lchown(r.p("f"), 1234, 5678))
			r.errno("chown cap", unix.Lchown(r.p("cap"), 1, 1))
			r.statBlocks("f")
			r.read("f")
			r.stat("cap")
		}),
		meta("utimes of a lower file copies up its metadata", func(r *rec) {
			r.errno("utimensat f", unix.UtimesNanoAt(unix.AT_FDCWD, r.p("f"), past, 0))
			var st unix.Stat_t
			r.errno("lstat f", unix.Lstat(r.p("f"), &st))
			r.val("mtime f", st.Mtim)
			r.read("f")
		}),
		meta("setfattr and removexattr on a lower file copy up its metadata", func(r *rec) {
			r.errno("setxattr big", unix.Setxattr(r.p("big"), "user.new", []byte("v"), 0))
			r.errno("removexattr d/x", unix.Removexattr(r.p("d/x"), "user.keep"))
			r.errno("removexattr missing on f", unix.Removexattr(r.p("f"), "user.none"))
			r.read("big")
			r.read("d/x")
		}),
		meta("a write after chmod copies the data up", func(r *rec) {
			r.errno("chmod big", unix.Chmod(r.p("big"), 0o640))
			r.write("big", 1<<20, "written")
			r.statBlocks("f")
			r.read("big")
			r.stat("big")
		}),
		meta("an open for write that writes nothing copies the data up", func(r *rec) {
			r.errno("chmod f", unix.Chmod(r.p("f"), 0o640))
			fd, err := unix.Open(r.p("f"), unix.O_RDWR, 0)
			r.errno("open rw f", err)
			if err == nil {
				unix.Close(fd)
			}
			r.read("f")
			r.stat("f")
		}),
		meta("truncate after chmod copies the data up and truncates", func(r *rec) {
			r.errno("chmod f", unix.Chmod(r.p("f"), 0o640))
			r.errno("chmod big", unix.Chmod(r.p("big"), 0o640))
			r.errno("truncate f 5", unix.Truncate(r.p("f"), 5))
			r.errno("truncate big 0", unix.Truncate(r.p("big"), 0))
			r.read("f")
			r.read("big")
			r.stat("big")
		}),
		meta("O_TRUNC after chmod empties the file", func(r *rec) {
			r.errno("chmod f", unix.Chmod(r.p("f"), 0o640))
			fd, err := unix.Open(r.p("f"), unix.O_WRONLY|unix.O_TRUNC, 0)
			r.errno("open f O_TRUNC", err)
			if err == nil {
				unix.Close(fd)
			}
			r.read("f")
		}),
		throughDaemon(meta("a read-only fd opened before the data copy-up reads the new data after it", func(r *rec) {
			r.errno("chmod f", unix.Chmod(r.p("f"), 0o644))
			ro, err := unix.Open(r.p("f"), unix.O_RDONLY, 0)
			r.errno("open ro", err)
			if err != nil {
				return
			}
			defer unix.Close(ro)
			buf := make([]byte, 64)
			n, err := unix.Pread(ro, buf, 0)
			r.errno("pread before", err)
			r.val("read before", fmt.Sprintf("%q", buf[:max(n, 0)]))
			r.write("f", 0, "LOWER")
			n, err = unix.Pread(ro, buf, 0)
			r.errno("pread after", err)
			r.val("read after", fmt.Sprintf("%q", buf[:max(n, 0)]))
		})),
		meta("unlink of a metacopy file leaves a whiteout", func(r *rec) {
			r.errno("chmod f", unix.Chmod(r.p("f"), 0o600))
			r.errno("unlink f", unix.Unlink(r.p("f")))
			r.stat("f")
			r.ls(".")
		}),
		meta("chmod of one name of a lower hard link", func(r *rec) {
			r.errno("chmod h1", unix.Chmod(r.p("h1"), 0o600))
			r.stat("h1")
			r.stat("h2")
			r.read("h1")
			r.write("h1", 0, "L")
			r.read("h1")
			r.read("h2")
		}),
		meta("directories, symlinks and the file a symlink points to", func(r *rec) {
			r.errno("chmod d", unix.Chmod(r.p("d"), 0o700))
			r.errno("lchown l", unix.Lchown(r.p("l"), 7, 7))
			r.errno("chmod through l", unix.Chmod(r.p("l"), 0o604))
			r.stat("d")
			r.stat("l")
			r.stat("f")
			r.read("l")
		}),
		{
			name:        "fchmod through a read-only fd of a removed metacopy file leaves the lower alone",
			lowers:      []layer{metacopyLower()},
			opts:        metacopyOpts,
			fuseDiffers: "the kernel still holds the removed name's upper inode and changes it; cowfs removed the upper copy and refuses (ENOENT) rather than touch the lower data its fd is open on",
			op: ops(func(r *rec) {
				r.errno("chmod f", unix.Chmod(r.p("f"), 0o600))
				fd, err := unix.Open(r.p("f"), unix.O_RDONLY, 0)
				r.errno("open ro f", err)
				if err != nil {
					return
				}
				defer unix.Close(fd)
				r.errno("unlink f", unix.Unlink(r.p("f")))
				r.errno("fchmod", unix.Fchmod(fd, 0o777))
				r.errno("fchown", unix.Fchown(fd, 5, 5))
				buf := make([]byte, 64)
				n, err := unix.Pread(fd, buf, 0)
				r.errno("pread", err)
				r.val("read", fmt.Sprintf("%q", buf[:max(n, 0)]))
			}),
		},
		{
			name:   "the data comes from the topmost lower holding the file",
			lowers: []layer{{"f": file("top lower")}, {"f": file("bottom lower"), "g": file("g")}},
			opts:   metacopyOpts,
			op: ops(func(r *rec) {
				r.errno("chmod f", unix.Chmod(r.p("f"), 0o600))
				r.errno("chmod g", unix.Chmod(r.p("g"), 0o600))
				r.read("f")
				r.read("g")
			}),
		},
		{
			name:   "metacopy files read right after a remount",
			lowers: []layer{metacopyLower()},
			opts:   metacopyOpts,
			op: ops(func(r *rec) {
				r.errno("chmod big", unix.Chmod(r.p("big"), 0o600))
				r.errno("chown f", unix.Lchown(r.p("f"), 3, 4))
				r.errno("setxattr cap", unix.Setxattr(r.p("cap"), "user.x", []byte("1"), 0))
			}),
			afterRemount: func(t *testing.T, mnt string, _ result) result {
				return ops(func(r *rec) {
					for _, n := range []string{"big", "f", "cap"} {
						r.statBlocks(n)
						r.read(n)
					}
					r.write("big", 0, "after remount")
					r.read("big")
					r.errno("truncate f", unix.Truncate(r.p("f"), 2))
					r.read("f")
				})(t, mnt)
			},
		},
		{
			name:         "rename of a metacopy file keeps its data (cowfs copies the data up first)",
			lowers:       []layer{metacopyLower()},
			opts:         metacopyOpts,
			upperDiffers: "the kernel keeps a renamed metacopy file with a redirect xattr; cowfs, without redirects, copies its data up before the rename",
			op: ops(func(r *rec) {
				r.errno("chmod f", unix.Chmod(r.p("f"), 0o600))
				r.errno("rename f g", unix.Rename(r.p("f"), r.p("g")))
				r.stat("g")
				r.read("g")
				r.stat("f")
			}),
		},
		{
			name:         "link of a metacopy file keeps its data (cowfs copies the data up first)",
			lowers:       []layer{metacopyLower()},
			opts:         metacopyOpts,
			upperDiffers: "the kernel links the metacopy file as it is; cowfs copies its data up before the link",
			op: ops(func(r *rec) {
				r.errno("chmod f", unix.Chmod(r.p("f"), 0o600))
				r.errno("link f g", unix.Link(r.p("f"), r.p("g")))
				r.read("g")
				r.write("g", 0, "G")
				r.read("f")
				r.stat("f")
			}),
		},
	}
	// Unprivileged, cowfs writes and reads user.overlay.metacopy; forced here as root
	// (COWFS_FORCE_FALLBACK=trusted). The kernel's userxattr mode has no metacopy, so the
	// kernel side stays privileged: the snapshots fold both namespaces into "metacopy".
	userOpts := metacopyOpts
	userOpts.env = []string{"COWFS_FORCE_FALLBACK=trusted"}
	for _, c := range []behaviourCase{cases[0], cases[4], cases[6], cases[13]} {
		c.name += " (user.overlay.metacopy)"
		c.opts = userOpts
		cases = append(cases, c)
	}
	runCases(t, cases)
}

// TestMetacopyUpperReadByTheOtherKind writes metacopy files with each kind, then mounts
// a copy of that upper with the other kind (both with metacopy=on): the kernel reads
// cowfs's metacopy files and cowfs the kernel's, to the same tree and data, and writing
// through the other kind completes them.
func TestMetacopyUpperReadByTheOtherKind(t *testing.T) {
	requireMounts(t)
	lower := metacopyLower()
	work := ops(func(r *rec) {
		r.errno("chmod big", unix.Chmod(r.p("big"), 0o600))
		r.errno("chown f", unix.Lchown(r.p("f"), 3, 4))
		r.errno("setxattr d/x", unix.Setxattr(r.p("d/x"), "user.y", []byte("2"), 0))
		r.errno("chmod empty", unix.Chmod(r.p("empty"), 0o400))
	})
	var trees, after [2]snapshot
	for i, kind := range []mountKind{kernelKind, fuseKind} {
		m := newTestMountOpts(t, kind, metacopyOpts, lower, layer{})
		work(t, m.dir)
		m.unmount()
		for _, n := range []string{"big", "f", "d/x"} {
			if !isMetacopyFile(filepath.Join(m.upper, n)) {
				t.Errorf("%s's upper %s is not a metacopy file", kind, n)
			}
		}
		other := fuseKind
		if kind == fuseKind {
			other = kernelKind
		}
		o := newTestMountOpts(t, other, metacopyOpts, lower, layer{})
		o.unmount()
		if err := os.RemoveAll(o.upper); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("cp", "-a", m.upper, o.upper).CombinedOutput(); err != nil {
			t.Fatalf("cp -a: %v\n%s", err, out)
		}
		o.mount()
		trees[i] = takeSnapshot(o.dir, mergedView)
		res := ops(func(r *rec) {
			r.write("big", 0, "by "+string(other))
			r.errno("truncate f", unix.Truncate(r.p("f"), 3))
		})(t, o.dir)
		for _, l := range res.lines {
			if l != "write big@0: ok" && l != "truncate f: ok" {
				t.Errorf("%s on %s's upper: %s", other, kind, l)
			}
		}
		after[i] = takeSnapshot(o.dir, mergedView)
		o.unmount()
		for _, n := range []string{"big", "f"} {
			if isMetacopyFile(filepath.Join(o.upper, n)) {
				t.Errorf("%s left %s's %s a metacopy file after writing it", other, kind, n)
			}
		}
	}
	// The kernel shows cowfs's private origin xattr (it does not know it); cowfs hides it.
	for i := range trees {
		trees[i], after[i] = dropCowfsXattrs(trees[i]), dropCowfsXattrs(after[i])
	}
	if d := diffSnapshots("kernel's upper read by cowfs", trees[0], "cowfs's upper read by the kernel", trees[1]); d != "" {
		t.Errorf("the two uppers read back differently:\n%s", d)
	}
	// The files written show who wrote them; everything else must agree.
	for i := range after {
		delete(after[i], "big")
	}
	if d := diffSnapshots("kernel's upper written by cowfs", after[0], "cowfs's upper written by the kernel", after[1]); d != "" {
		t.Errorf("the two uppers differ after writing:\n%s", d)
	}
}
