package integration

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func timeOf(ts unix.Timespec) time.Time { return time.Unix(ts.Sec, ts.Nsec).UTC() }

// TestLowerAtimes checks that reading through the mount never changes a lower layer:
// kernel overlayfs opens every lower file and directory O_NOATIME (ovl_path_open), so a
// listing, a read or a copy-up leaves the lower copy's atime as it was, and the merged
// view shows that atime. Every fixture entry has atime = mtime, so the layers' relatime
// mount (the default) would move it on the first read without O_NOATIME. cowfs runs
// with each data path: passed through to the layer file (the default as root) and
// through the daemon.
func TestLowerAtimes(t *testing.T) {
	requireMounts(t)
	cases := []struct {
		name string
		path string // the lower object whose atime must not change
		op   func(t *testing.T, mnt string)
		// passthrough, when set, says why a file passed through to the lower file
		// cannot keep it.
		passthrough string
	}{
		{
			name: "listing a lower directory leaves its atime",
			path: "d",
			op: func(t *testing.T, mnt string) {
				if _, err := os.ReadDir(filepath.Join(mnt, "d")); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "reading a lower file leaves its atime",
			path: "g",
			passthrough: "the kernel reads a passed-through file through a backing file it opens " +
				"itself, with the reader's open flags (fuse_passthrough_open), not the O_NOATIME of " +
				"the daemon's fd: relatime moves the lower's atime (README, \"Intended differences\")",
			op: func(t *testing.T, mnt string) {
				if _, err := os.ReadFile(filepath.Join(mnt, "g")); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "copying a lower file up to append to it leaves the lower's atime",
			path: "h",
			op: func(t *testing.T, mnt string) {
				f, err := os.OpenFile(filepath.Join(mnt, "h"), os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if _, err := f.WriteString("y"); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	mounts := []struct {
		kind mountKind
		name string
		opts mountOpts
	}{
		{kernelKind, "kernel", mountOpts{}},
		{fuseKind, "cowfs, passed through", mountOpts{}},
		{fuseKind, "cowfs through the daemon", mountOpts{env: []string{"COWFS_DATAPATH=writeback"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, mk := range mounts {
				t.Run(mk.name, func(t *testing.T) {
					if mk.name == "cowfs, passed through" && c.passthrough != "" {
						t.Skip(c.passthrough)
					}
					lower := layer{"d/f": file("data"), "g": file("0123456789"), "h": file("x")}
					m := newTestMountOpts(t, mk.kind, mk.opts, lower, layer{})
					c.op(t, m.dir)
					if got := mustLstat(t, join(m.lowers[0], c.path)).Atim; got.Sec != fixtureTime.Unix() || got.Nsec != 0 {
						t.Errorf("the lower %s's atime moved to %v (was %v)", c.path, timeOf(got), fixtureTime)
					}
					var st unix.Stat_t
					if err := unix.Lstat(join(m.dir, c.path), &st); err != nil {
						t.Fatal(err)
					}
					if st.Atim.Sec != fixtureTime.Unix() || st.Atim.Nsec != 0 {
						t.Errorf("the merged %s shows atime %v, not the lower's %v", c.path, timeOf(st.Atim), fixtureTime)
					}
				})
			}
		})
	}
}

// TestListedDirectoryAttributes: the attributes of a directory that only lower layers
// hold are kept from its listing (the kernel asks for them again after each listing),
// so they must give way to the upper copy's as soon as a change copies it up.
func TestListedDirectoryAttributes(t *testing.T) {
	runCases(t, []behaviourCase{
		{
			name:   "a listed lower directory shows its upper copy's times once a create copies it up",
			lowers: []layer{{"d/x": file("x"), "d/sub/y": file("y")}},
			op: ops(func(r *rec) {
				r.ls("d")
				r.mtimeIsFixture("d")
				r.errno("create d/new", os.WriteFile(r.p("d/new"), nil, 0o644))
				r.ls("d")
				r.mtimeIsFixture("d")
			}),
			want: []string{"mtime of d is the lower's: true", "mtime of d is the lower's: false"},
		},
		{
			name:   "a listed lower directory shows its new mode after a chmod",
			lowers: []layer{{"d/x": file("x")}},
			op: ops(func(r *rec) {
				r.ls("d")
				r.stat("d")
				r.errno("chmod d", unix.Chmod(r.p("d"), 0o700))
				r.ls("d")
				r.stat("d")
				r.ls("d/..")
				r.stat("d")
			}),
		},
	})
}
