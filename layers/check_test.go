package layers

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// checkDirs makes lower, upper, work and mnt under one temporary directory and
// returns options using them.
func checkDirs(t *testing.T) (string, Options) {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"lower", "lower2", "upper", "work", "mnt"} {
		mkdir(t, filepath.Join(root, d))
	}
	return root, Options{
		Lowers:     []string{filepath.Join(root, "lower"), filepath.Join(root, "lower2")},
		Upper:      filepath.Join(root, "upper"),
		Work:       filepath.Join(root, "work"),
		Mountpoint: filepath.Join(root, "mnt"),
	}
}

func mkdir(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

// mountTmpfs mounts a fresh tmpfs at dir and unmounts it when the test ends; it
// skips the test where mounting is not allowed.
func mountTmpfs(t *testing.T, dir, opts string) {
	t.Helper()
	if err := unix.Mount("cowfs-test", dir, "tmpfs", 0, opts); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

func TestCheckAcceptsUsableDirectories(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, root string, o *Options)
	}{
		{"fresh empty directories are usable", func(*testing.T, string, *Options) {}},
		{"a read-only mount of lowers needs no upper or work",
			func(_ *testing.T, _ string, o *Options) { o.Upper, o.Work = "", "" }},
		{"lower dirs given through symlinks work", func(t *testing.T, root string, o *Options) {
			link := filepath.Join(root, "lowerlink")
			if err := os.Symlink(o.Lowers[0], link); err != nil {
				t.Fatal(err)
			}
			o.Lowers[0] = link
		}},
		{"a workdir with work and index left by an earlier mount is usable", func(t *testing.T, _ string, o *Options) {
			mkdir(t, filepath.Join(o.Work, "work", "stale"))
			mkdir(t, filepath.Join(o.Work, "index"))
		}},
		{"relative paths are resolved against the current directory", func(t *testing.T, root string, o *Options) {
			t.Chdir(root)
			o.Lowers = []string{"lower", "./lower2"}
			o.Upper, o.Work, o.Mountpoint = "upper", "work", "mnt"
		}},
		{"mounting over a lower is allowed, as with fuse-overlayfs",
			func(_ *testing.T, _ string, o *Options) { o.Mountpoint = o.Lowers[0] }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, o := checkDirs(t)
			tt.setup(t, root, &o)
			if err := o.Check(); err != nil {
				t.Errorf("Check(%+v): %v", o, err)
			}
		})
	}
}

func TestCheckRejects(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, root string, o *Options)
		want  string // with root replaced by "R"
	}{
		{"a missing lowerdir", func(_ *testing.T, root string, o *Options) {
			o.Lowers[1] = filepath.Join(root, "nope")
		}, `lowerdir "R/nope": no such directory`},
		{"a lowerdir that is a file", func(t *testing.T, root string, o *Options) {
			o.Lowers[0] = writeFile(t, filepath.Join(root, "file"))
		}, `lowerdir "R/file": not a directory`},
		{"a missing upperdir", func(_ *testing.T, root string, o *Options) {
			o.Upper = filepath.Join(root, "nope")
		}, `upperdir "R/nope": no such directory`},
		{"a missing workdir", func(_ *testing.T, root string, o *Options) {
			o.Work = filepath.Join(root, "nope")
		}, `workdir "R/nope": no such directory`},
		{"a missing mountpoint", func(_ *testing.T, root string, o *Options) {
			o.Mountpoint = filepath.Join(root, "nope")
		}, `mountpoint "R/nope": no such directory`},
		{"a mountpoint that is a file", func(t *testing.T, root string, o *Options) {
			o.Mountpoint = writeFile(t, filepath.Join(root, "file"))
		}, `mountpoint "R/file": not a directory`},
		{"upperdir and workdir the same", func(_ *testing.T, _ string, o *Options) {
			o.Work = o.Upper
		}, `upperdir "R/upper" and workdir "R/upper" are the same directory`},
		{"upperdir and workdir the same through a symlink", func(t *testing.T, root string, o *Options) {
			o.Work = symlink(t, o.Upper, filepath.Join(root, "uplink"))
		}, `upperdir "R/upper" and workdir "R/uplink" are the same directory`},
		{"workdir inside upperdir", func(t *testing.T, _ string, o *Options) {
			o.Work = filepath.Join(o.Upper, "w")
			mkdir(t, o.Work)
		}, `workdir "R/upper/w" is inside upperdir "R/upper"`},
		{"upperdir inside workdir", func(t *testing.T, _ string, o *Options) {
			o.Upper = filepath.Join(o.Work, "u")
			mkdir(t, o.Upper)
		}, `upperdir "R/work/u" is inside workdir "R/work"`},
		{"upperdir inside a lowerdir", func(t *testing.T, _ string, o *Options) {
			o.Upper = filepath.Join(o.Lowers[1], "u")
			mkdir(t, o.Upper)
		}, `upperdir "R/lower2/u" is inside lowerdir "R/lower2"`},
		{"upperdir inside a lowerdir through a symlink", func(t *testing.T, root string, o *Options) {
			mkdir(t, filepath.Join(o.Lowers[0], "u"))
			o.Upper = symlink(t, filepath.Join(o.Lowers[0], "u"), filepath.Join(root, "uplink"))
		}, `upperdir "R/uplink" is inside lowerdir "R/lower"`},
		{"a lowerdir inside upperdir", func(t *testing.T, _ string, o *Options) {
			o.Lowers[0] = filepath.Join(o.Upper, "l")
			mkdir(t, o.Lowers[0])
		}, `lowerdir "R/upper/l" is inside upperdir "R/upper"`},
		{"upperdir the same as a lowerdir", func(_ *testing.T, _ string, o *Options) {
			o.Upper = o.Lowers[0]
		}, `upperdir "R/lower" and lowerdir "R/lower" are the same directory`},
		{"workdir inside a lowerdir", func(t *testing.T, _ string, o *Options) {
			o.Work = filepath.Join(o.Lowers[0], "w")
			mkdir(t, o.Work)
		}, `workdir "R/lower/w" is inside lowerdir "R/lower"`},
		{"upperdir inside the mountpoint", func(t *testing.T, _ string, o *Options) {
			o.Upper = filepath.Join(o.Mountpoint, "u")
			mkdir(t, o.Upper)
		}, `upperdir "R/mnt/u" is inside mountpoint "R/mnt"`},
		{"workdir inside the mountpoint", func(t *testing.T, _ string, o *Options) {
			o.Work = filepath.Join(o.Mountpoint, "w")
			mkdir(t, o.Work)
		}, `workdir "R/mnt/w" is inside mountpoint "R/mnt"`},
		{"the mountpoint inside upperdir", func(t *testing.T, _ string, o *Options) {
			o.Mountpoint = filepath.Join(o.Upper, "m")
			mkdir(t, o.Mountpoint)
		}, `mountpoint "R/upper/m" is inside upperdir "R/upper"`},
		{"the mountpoint inside workdir", func(t *testing.T, _ string, o *Options) {
			o.Mountpoint = filepath.Join(o.Work, "m")
			mkdir(t, o.Mountpoint)
		}, `mountpoint "R/work/m" is inside workdir "R/work"`},
		{"the mountpoint the same as upperdir", func(_ *testing.T, _ string, o *Options) {
			o.Mountpoint = o.Upper
		}, `upperdir "R/upper" and mountpoint "R/upper" are the same directory`},
		{"a workdir whose work is a regular file", func(t *testing.T, _ string, o *Options) {
			writeFile(t, filepath.Join(o.Work, "work"))
		}, `workdir "R/work": "work" in it is not a directory`},
		{"a workdir whose index is a symlink", func(t *testing.T, _ string, o *Options) {
			symlink(t, o.Upper, filepath.Join(o.Work, "index"))
		}, `workdir "R/work": "index" in it is not a directory`},
		{"a workdir on another filesystem than upperdir", func(t *testing.T, _ string, o *Options) {
			mountTmpfs(t, o.Work, "size=1m")
		}, `workdir "R/work" is not on the same filesystem as upperdir "R/upper"`},
		{"a busy mountpoint", func(t *testing.T, _ string, o *Options) {
			mountTmpfs(t, o.Mountpoint, "size=1m")
		}, `mountpoint "R/mnt" is busy: already mounted`},
		{"a busy mountpoint given through a symlink", func(t *testing.T, root string, o *Options) {
			mountTmpfs(t, o.Mountpoint, "size=1m")
			o.Mountpoint = symlink(t, o.Mountpoint, filepath.Join(root, "mntlink"))
		}, `mountpoint "R/mntlink" is busy: already mounted`},
		{"an upperdir on a read-only filesystem", func(t *testing.T, root string, o *Options) {
			fsDir := filepath.Join(root, "rofs")
			mkdir(t, fsDir)
			mountTmpfs(t, fsDir, "size=1m")
			o.Upper, o.Work = filepath.Join(fsDir, "u"), filepath.Join(fsDir, "w")
			mkdir(t, o.Upper)
			mkdir(t, o.Work)
			if err := unix.Mount("", fsDir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				t.Fatalf("remount read-only: %v", err)
			}
		}, `upperdir "R/rofs/u": not writable: read-only file system`},
		{"options that fail Validate", func(_ *testing.T, _ string, o *Options) {
			o.Work = ""
		}, "upperdir given without workdir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, o := checkDirs(t)
			tt.setup(t, root, &o)
			err := o.Check()
			if err == nil {
				t.Fatalf("Check(%+v) passed, want %q", o, tt.want)
			}
			if got := strings.ReplaceAll(err.Error(), root, "R"); got != tt.want {
				t.Errorf("Check: %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestCheckWrapsTheSystemError(t *testing.T) {
	_, o := checkDirs(t)
	o.Lowers[0] = filepath.Join(o.Lowers[0], "nope")
	if err := o.Check(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Check: %v, want it to wrap fs.ErrNotExist", err)
	}
}

func TestCheckAcceptsAReadOnlyUpperWhenMountingReadOnly(t *testing.T) {
	root, o := checkDirs(t)
	fsDir := filepath.Join(root, "rofs")
	mkdir(t, fsDir)
	mountTmpfs(t, fsDir, "size=1m")
	o.Upper, o.Work = filepath.Join(fsDir, "u"), filepath.Join(fsDir, "w")
	mkdir(t, o.Upper)
	mkdir(t, o.Work)
	if err := unix.Mount("", fsDir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount read-only: %v", err)
	}
	o.ReadOnly = true
	if err := o.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}
}

func writeFile(t *testing.T, path string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func symlink(t *testing.T, target, link string) string {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	return link
}
