package whiteout_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cowfs/cowfs/whiteout"
	"golang.org/x/sys/unix"
)

// requireRoot skips tests that write trusted.* xattrs and char 0/0 devices.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: trusted.* xattrs and mknod of char 0/0 devices")
	}
}

// openPath opens dir as an O_PATH directory fd, the way layers hold directories.
func openPath(t *testing.T, dir string) int {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func setx(t *testing.T, path, attr, value string) {
	t.Helper()
	if err := unix.Lsetxattr(path, attr, []byte(value), 0); err != nil {
		t.Fatalf("setxattr %s %s: %v", path, attr, err)
	}
}

func mknodWhiteout(t *testing.T, path string) {
	t.Helper()
	if err := unix.Mknod(path, unix.S_IFCHR, 0); err != nil {
		t.Fatalf("mknod %s: %v", path, err)
	}
}

func TestReadDirMarks(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name string
		mark func(t *testing.T, dir string)
		want whiteout.DirMarks
		// byFile: the mark is a file, which ReadDirXattrMarks does not look for.
		byFile bool
	}{
		{"a plain directory has no marks", func(*testing.T, string) {}, whiteout.DirMarks{}, false},
		{"trusted overlay.opaque=y is opaque", func(t *testing.T, d string) { setx(t, d, "trusted.overlay.opaque", "y") }, whiteout.DirMarks{Opaque: true}, false},
		{"user overlay.opaque=y is opaque", func(t *testing.T, d string) { setx(t, d, "user.overlay.opaque", "y") }, whiteout.DirMarks{Opaque: true}, false},
		{"fuse-overlayfs's opaque xattr is opaque", func(t *testing.T, d string) { setx(t, d, "user.fuseoverlayfs.opaque", "y") }, whiteout.DirMarks{Opaque: true}, false},
		{"an OCI .wh..wh..opq file is opaque", func(t *testing.T, d string) {
			if err := os.WriteFile(filepath.Join(d, ".wh..wh..opq"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}, whiteout.DirMarks{Opaque: true}, true},
		{"a .wh..wh..opq of another type is opaque too", func(t *testing.T, d string) { mknodWhiteout(t, filepath.Join(d, ".wh..wh..opq")) }, whiteout.DirMarks{Opaque: true}, true},
		{"trusted overlay.opaque=x means xattr whiteouts, not opaque", func(t *testing.T, d string) { setx(t, d, "trusted.overlay.opaque", "x") }, whiteout.DirMarks{XattrWhiteouts: true}, false},
		{"user overlay.opaque=x means xattr whiteouts, not opaque", func(t *testing.T, d string) { setx(t, d, "user.overlay.opaque", "x") }, whiteout.DirMarks{XattrWhiteouts: true}, false},
		{"another opaque value means nothing", func(t *testing.T, d string) { setx(t, d, "trusted.overlay.opaque", "n") }, whiteout.DirMarks{}, false},
		{"a user's escaped opaque attribute is not a marker", func(t *testing.T, d string) { setx(t, d, "trusted.overlay.overlay.opaque", "y") }, whiteout.DirMarks{}, false},
		{"an unrelated user attribute is not a marker", func(t *testing.T, d string) { setx(t, d, "user.opaque", "y") }, whiteout.DirMarks{}, false},
		{"an opaque file below the directory does not count", func(t *testing.T, d string) {
			if err := os.MkdirAll(filepath.Join(d, "sub", ".wh..wh..opq"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, whiteout.DirMarks{}, false},
		{"a whiteout file in the directory does not make it opaque", func(t *testing.T, d string) {
			if err := os.WriteFile(filepath.Join(d, ".wh.foo"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}, whiteout.DirMarks{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			d := filepath.Join(parent, "d")
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			tt.mark(t, d)
			got, err := whiteout.ReadDirMarks(openPath(t, parent), "d")
			if err != nil || got != tt.want {
				t.Errorf("ReadDirMarks(parent, %q) = %+v, %v; want %+v", "d", got, err, tt.want)
			}
			got, err = whiteout.ReadDirMarks(openPath(t, d), "")
			if err != nil || got != tt.want {
				t.Errorf("ReadDirMarks(dir, \"\") = %+v, %v; want %+v", got, err, tt.want)
			}
			wantX := tt.want
			if tt.byFile {
				wantX.Opaque = false
			}
			for _, at := range []struct {
				fd   int
				name string
			}{{openPath(t, parent), "d"}, {openPath(t, d), ""}} {
				if got, err := whiteout.ReadDirXattrMarks(at.fd, at.name); err != nil || got != wantX {
					t.Errorf("ReadDirXattrMarks(%q) = %+v, %v; want %+v", at.name, got, err, wantX)
				}
			}
		})
	}
}

func TestAtAndRemove(t *testing.T) {
	requireRoot(t)
	long := strings.Repeat("n", 253) // fits, but .wh. + it does not
	tests := []struct {
		name   string
		entry  string
		make   func(t *testing.T, dir string)
		want   whiteout.Kind
		remain bool // the entry survives Remove(kind)
	}{
		{"nothing at the name is None", "x", func(*testing.T, string) {}, whiteout.None, false},
		{"a regular file is an Entry", "x", func(t *testing.T, d string) {
			if err := os.WriteFile(filepath.Join(d, "x"), []byte("data"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, whiteout.Entry, true},
		{"an empty regular file is an Entry", "x", func(t *testing.T, d string) {
			if err := os.WriteFile(filepath.Join(d, "x"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}, whiteout.Entry, true},
		{"a directory is an Entry", "x", func(t *testing.T, d string) {
			if err := os.Mkdir(filepath.Join(d, "x"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, whiteout.Entry, true},
		{"a dangling symlink is an Entry", "x", func(t *testing.T, d string) {
			if err := os.Symlink("nowhere", filepath.Join(d, "x")); err != nil {
				t.Fatal(err)
			}
		}, whiteout.Entry, true},
		{"a char device other than 0/0 is an Entry", "x", func(t *testing.T, d string) {
			if err := unix.Mknod(filepath.Join(d, "x"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
				t.Fatal(err)
			}
		}, whiteout.Entry, true},
		{"a block device 0/0 is an Entry", "x", func(t *testing.T, d string) {
			if err := unix.Mknod(filepath.Join(d, "x"), unix.S_IFBLK|0o600, 0); err != nil {
				t.Fatal(err)
			}
		}, whiteout.Entry, true},
		{"a char 0/0 device is a CharWhiteout", "x", func(t *testing.T, d string) { mknodWhiteout(t, filepath.Join(d, "x")) }, whiteout.CharWhiteout, false},
		{"a .wh. file is a FileWhiteout", "x", func(t *testing.T, d string) {
			if err := os.WriteFile(filepath.Join(d, ".wh.x"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}, whiteout.FileWhiteout, false},
		{"a .wh. char device is a FileWhiteout", "x", func(t *testing.T, d string) { mknodWhiteout(t, filepath.Join(d, ".wh.x")) }, whiteout.FileWhiteout, false},
		{"a real entry wins over a stray .wh. file", "x", func(t *testing.T, d string) {
			for _, n := range []string{"x", ".wh.x"} {
				if err := os.WriteFile(filepath.Join(d, n), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}, whiteout.Entry, true},
		{"a name too long for a .wh. file has no whiteout", long, func(*testing.T, string) {}, whiteout.None, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := t.TempDir()
			tt.make(t, d)
			fd := openPath(t, d)
			got, err := whiteout.At(fd, tt.entry)
			if err != nil || got != tt.want {
				t.Fatalf("At = %v, %v; want %v", got, err, tt.want)
			}
			if err := whiteout.Remove(fd, tt.entry, got); err != nil {
				t.Fatalf("Remove(%v): %v", got, err)
			}
			after, err := whiteout.At(fd, tt.entry)
			if err != nil {
				t.Fatal(err)
			}
			if tt.remain && after != got {
				t.Errorf("after Remove(%v) At = %v, want the entry untouched", got, after)
			}
			if !tt.remain && after != whiteout.None {
				t.Errorf("after Remove(%v) At = %v, want None", got, after)
			}
			if tt.want == whiteout.FileWhiteout || tt.want == whiteout.CharWhiteout {
				if names := dirNames(t, d); len(names) != 0 {
					t.Errorf("after Remove the directory holds %q, want nothing", names)
				}
			}
		})
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestFormatCreate(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name     string
		format   whiteout.Format
		onDisk   string // the name the marker is written under
		wantKind whiteout.Kind
	}{
		{"the char device format writes a char 0/0 at the name", whiteout.Format{XattrPrefix: "trusted.", CharDev: true}, "x", whiteout.CharWhiteout},
		{"the file format writes an empty .wh. file", whiteout.Format{XattrPrefix: "user."}, ".wh.x", whiteout.FileWhiteout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := t.TempDir()
			fd := openPath(t, d)
			if err := tt.format.Create(fd, "x"); err != nil {
				t.Fatal(err)
			}
			if names := dirNames(t, d); len(names) != 1 || names[0] != tt.onDisk {
				t.Errorf("directory holds %q, want exactly [%s]", names, tt.onDisk)
			}
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(d, tt.onDisk), &st); err != nil {
				t.Fatal(err)
			}
			if tt.format.CharDev && !whiteout.IsCharWhiteout(&st) {
				t.Errorf("mode %o rdev %d is not a char 0/0 device", st.Mode, st.Rdev)
			}
			if !tt.format.CharDev && (st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != 0) {
				t.Errorf("mode %o size %d is not an empty regular file", st.Mode, st.Size)
			}
			if k, err := whiteout.At(fd, "x"); err != nil || k != tt.wantKind {
				t.Errorf("At = %v, %v; want %v", k, err, tt.wantKind)
			}
			if err := tt.format.Create(fd, "x"); err == nil {
				t.Errorf("a second Create over the existing whiteout succeeded, want EEXIST")
			}
		})
	}
	t.Run("creating over an existing entry fails in either format", func(t *testing.T) {
		for _, f := range []whiteout.Format{{CharDev: true}, {}} {
			d := t.TempDir()
			if err := os.WriteFile(filepath.Join(d, "x"), []byte("keep"), 0o644); err != nil {
				t.Fatal(err)
			}
			fd := openPath(t, d)
			err := f.Create(fd, "x")
			if f.CharDev && err == nil {
				t.Errorf("CharDev Create over a file succeeded")
			}
			if b, _ := os.ReadFile(filepath.Join(d, "x")); string(b) != "keep" {
				t.Errorf("format %+v: the existing file now reads %q", f, b)
			}
		}
	})
}

func TestSetOpaque(t *testing.T) {
	requireRoot(t)
	for _, prefix := range []string{"trusted.", "user."} {
		t.Run("the "+prefix+" format writes "+prefix+"overlay.opaque=y", func(t *testing.T) {
			parent := t.TempDir()
			d := filepath.Join(parent, "d")
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			f := whiteout.Format{XattrPrefix: prefix}
			if f.OpaqueAttr() != prefix+"overlay.opaque" {
				t.Errorf("OpaqueAttr = %q", f.OpaqueAttr())
			}
			pfd := openPath(t, parent)
			if err := f.SetOpaque(pfd, "d"); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 16)
			n, err := unix.Lgetxattr(d, prefix+"overlay.opaque", buf)
			if err != nil || string(buf[:n]) != "y" {
				t.Errorf("%soverlay.opaque = %q, %v; want \"y\"", prefix, buf[:max(n, 0)], err)
			}
			if m, err := whiteout.ReadDirMarks(pfd, "d"); err != nil || !m.Opaque {
				t.Errorf("ReadDirMarks = %+v, %v; want opaque", m, err)
			}
		})
	}
}

func TestProbe(t *testing.T) {
	requireRoot(t)
	t.Run("root on a local filesystem gets char devices and trusted xattrs and leaves the work dir empty", func(t *testing.T) {
		d := t.TempDir()
		f, err := whiteout.Probe(openPath(t, d))
		if err != nil {
			t.Fatal(err)
		}
		want := whiteout.Format{XattrPrefix: "trusted.", CharDev: true}
		if !reflect.DeepEqual(f, want) {
			t.Errorf("Probe = %+v, want %+v", f, want)
		}
		if names := dirNames(t, d); len(names) != 0 {
			t.Errorf("work dir holds %q after the probe", names)
		}
	})
	for _, tt := range []struct {
		name, force string
		want        whiteout.Format
		says        string
	}{
		{"without mknod, whiteouts are .wh. files", "mknod", whiteout.Format{XattrPrefix: "trusted."}, "mknod 0/0"},
		{"without trusted xattrs, markers are user. xattrs", "trusted", whiteout.Format{XattrPrefix: "user.", CharDev: true}, "user.overlay.*"},
		{"without xattrs, opaque directories hold a .wh..wh..opq file", "xattr", whiteout.Format{CharDev: true}, ".wh..wh..opq"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := t.TempDir()
			f, err := whiteout.Probe(openPath(t, d), tt.force)
			if err != nil {
				t.Fatal(err)
			}
			if len(f.Fallbacks) != 1 || !strings.Contains(f.Fallbacks[0], tt.says) {
				t.Errorf("Fallbacks = %q, want one that says %q", f.Fallbacks, tt.says)
			}
			f.Fallbacks = nil
			if !reflect.DeepEqual(f, tt.want) {
				t.Errorf("Probe = %+v, want %+v", f, tt.want)
			}
		})
	}
	t.Run("a filesystem without xattrs (ramfs) gets .wh..wh..opq files", func(t *testing.T) {
		d := t.TempDir()
		if err := unix.Mount("ramfs", d, "ramfs", 0, ""); err != nil {
			t.Skipf("cannot mount ramfs: %v", err)
		}
		t.Cleanup(func() { unix.Unmount(d, unix.MNT_DETACH) })
		f, err := whiteout.Probe(openPath(t, d))
		if err != nil {
			t.Fatal(err)
		}
		if f.XattrPrefix != "" {
			t.Errorf("Probe on ramfs = %+v, want no xattr prefix", f)
		}
		if err := os.Mkdir(filepath.Join(d, "o"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := f.SetOpaque(openPath(t, d), "o"); err != nil {
			t.Fatal(err)
		}
		m, err := whiteout.ReadDirMarks(openPath(t, d), "o")
		if err != nil || !m.Opaque {
			t.Errorf("after SetOpaque on ramfs: ReadDirMarks = %+v, %v; want opaque", m, err)
		}
	})
	t.Run("a leftover probe entry from a crash does not stop the probe", func(t *testing.T) {
		d := t.TempDir()
		mknodWhiteout(t, filepath.Join(d, "cowfs-probe"))
		if _, err := whiteout.Probe(openPath(t, d)); err != nil {
			t.Fatal(err)
		}
		if names := dirNames(t, d); len(names) != 0 {
			t.Errorf("work dir holds %q after the probe", names)
		}
	})
	t.Run("a read-only work dir is an error", func(t *testing.T) {
		d := t.TempDir()
		if err := unix.Mount("tmpfs", d, "tmpfs", unix.MS_RDONLY, ""); err != nil {
			t.Skipf("cannot mount a read-only tmpfs to probe: %v", err)
		}
		t.Cleanup(func() { unix.Unmount(d, unix.MNT_DETACH) })
		if f, err := whiteout.Probe(openPath(t, d)); err == nil {
			t.Errorf("Probe on a read-only dir = %+v, nil; want an error", f)
		}
	})
}

func TestIsXattrWhiteout(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name  string
		attr  string
		value string
		want  bool
	}{
		{"a file without attributes is not a whiteout", "", "", false},
		{"trusted overlay.whiteout marks a whiteout", "trusted.overlay.whiteout", "", true},
		{"user overlay.whiteout marks a whiteout", "user.overlay.whiteout", "y", true},
		{"a user's escaped whiteout attribute does not", "trusted.overlay.overlay.whiteout", "", false},
		{"an unrelated attribute does not", "user.whiteout", "y", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := t.TempDir()
			p := filepath.Join(d, "f")
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if tt.attr != "" {
				setx(t, p, tt.attr, tt.value)
			}
			if got := whiteout.IsXattrWhiteout(openPath(t, d), "f"); got != tt.want {
				t.Errorf("IsXattrWhiteout = %v, want %v", got, tt.want)
			}
		})
	}
}
