package sysx

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// The attribute calls give the same answers through the *xattrat system calls and
// through /proc/self/fd, on a file, a directory named by its parent, the directory
// itself and a symlink (never followed).
func TestXattrCallsAnswerTheSameWithAndWithoutXattrat(t *testing.T) {
	for _, mode := range []struct {
		name     string
		noAtCall bool
	}{
		{name: "with the xattrat calls"},
		{name: "through /proc/self/fd", noAtCall: true},
	} {
		t.Run(mode.name, func(t *testing.T) {
			if !mode.noAtCall && !kernelHasXattrAt(t) {
				t.Skip("this kernel has no getxattrat(2) (Linux 6.13+): the /proc path is what runs")
			}
			noXattrAt.Store(mode.noAtCall)
			t.Cleanup(func() { noXattrAt.Store(false) })
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			target := filepath.Join(dir, "target")
			if err := os.WriteFile(target, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := unix.Setxattr(target, "user.target", []byte("no"), 0); err != nil {
				t.Skipf("the test directory's filesystem takes no user xattrs: %v", err)
			}
			if err := os.Symlink("target", filepath.Join(dir, "link")); err != nil {
				t.Fatal(err)
			}
			fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Close(fd) })
			long := bytes.Repeat([]byte("v"), 3000) // more than the first 256-byte try

			for _, tc := range []struct {
				name  string
				entry string
			}{
				{name: "a file named by its directory", entry: "file"},
				{name: "a directory named by its parent", entry: "sub"},
				{name: "the directory itself", entry: ""},
			} {
				t.Run(tc.name, func(t *testing.T) {
					if err := Setxattr(fd, tc.entry, "user.short", []byte("1"), 0); err != nil {
						t.Fatalf("Setxattr: %v", err)
					}
					if err := Setxattr(fd, tc.entry, "user.long", long, 0); err != nil {
						t.Fatalf("Setxattr long: %v", err)
					}
					if err := Setxattr(fd, tc.entry, "user.short", []byte("2"), unix.XATTR_CREATE); !errors.Is(err, unix.EEXIST) {
						t.Errorf("Setxattr with XATTR_CREATE over an existing one: %v, want EEXIST", err)
					}
					if v, err := Getxattr(fd, tc.entry, "user.short"); err != nil || string(v) != "1" {
						t.Errorf("Getxattr = %q, %v; want \"1\"", v, err)
					}
					if v, err := Getxattr(fd, tc.entry, "user.long"); err != nil || !bytes.Equal(v, long) {
						t.Errorf("Getxattr of a 3,000-byte value = %d bytes, %v", len(v), err)
					}
					names, err := Listxattr(fd, tc.entry)
					slices.Sort(names)
					if err != nil || !slices.Equal(names, []string{"user.long", "user.short"}) {
						t.Errorf("Listxattr = %q, %v", names, err)
					}
					if err := Removexattr(fd, tc.entry, "user.long"); err != nil {
						t.Errorf("Removexattr: %v", err)
					}
					if _, err := Getxattr(fd, tc.entry, "user.long"); !IsNoData(err) {
						t.Errorf("Getxattr after Removexattr: %v, want ENODATA", err)
					}
					if err := Removexattr(fd, tc.entry, "user.short"); err != nil {
						t.Errorf("Removexattr: %v", err)
					}
				})
			}
			t.Run("a symlink is not followed", func(t *testing.T) {
				if _, err := Getxattr(fd, "link", "user.target"); !IsNoData(err) {
					t.Errorf("Getxattr through a symlink: %v, want ENODATA (the link's own, not the target's)", err)
				}
				if names, err := Listxattr(fd, "link"); err != nil || slices.Contains(names, "user.target") {
					t.Errorf("Listxattr of a symlink = %q, %v: shows the target's", names, err)
				}
				if err := Setxattr(fd, "link", "user.x", []byte("1"), 0); err == nil {
					t.Error("Setxattr of user.x on a symlink succeeded (the kernel refuses user xattrs on links): it went to the target")
				}
				if v, err := unix.Getxattr(target, "user.x", nil); err == nil {
					t.Errorf("the symlink's target got user.x (%d bytes)", v)
				}
			})
			t.Run("a missing entry says ENOENT", func(t *testing.T) {
				if _, err := Getxattr(fd, "missing", "user.x"); !IsNotExist(err) {
					t.Errorf("Getxattr: %v, want ENOENT", err)
				}
			})
			if !mode.noAtCall && noXattrAt.Load() {
				t.Error("the calls fell back to /proc although the kernel has the xattrat calls")
			}
		})
	}
}

func kernelHasXattrAt(t *testing.T) bool {
	_, err := getxattrat(unix.AT_FDCWD, "/", "user.none", nil)
	return err != unix.ENOSYS
}

// ChmodNoFollow changes a file and a directory (by name and itself) and refuses a
// symlink, with fchmodat2 and without it.
func TestChmodNoFollowNeverFollowsASymlink(t *testing.T) {
	for _, mode := range []struct {
		name        string
		noFchmodat2 bool
	}{
		{name: "with fchmodat2"},
		{name: "through an O_PATH fd", noFchmodat2: true},
	} {
		t.Run(mode.name, func(t *testing.T) {
			noFchmodat2.Store(mode.noFchmodat2)
			t.Cleanup(func() { noFchmodat2.Store(false) })
			dir := t.TempDir()
			target := filepath.Join(dir, "target")
			for _, f := range []string{"file", "target"} {
				if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("target", filepath.Join(dir, "link")); err != nil {
				t.Fatal(err)
			}
			fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Close(fd) })
			sub, err := unix.Open(filepath.Join(dir, "sub"), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Close(sub) })
			for _, tc := range []struct {
				name  string
				dirfd int
				entry string
				path  string
				mode  uint32
			}{
				{name: "a file by name", dirfd: fd, entry: "file", path: "file", mode: 0o600},
				{name: "a directory by name", dirfd: fd, entry: "sub", path: "sub", mode: 0o711},
				{name: "a directory itself", dirfd: sub, entry: "", path: "sub", mode: 0o700},
			} {
				if err := ChmodNoFollow(tc.dirfd, tc.entry, tc.mode); err != nil {
					t.Errorf("%s: %v", tc.name, err)
				}
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(dir, tc.path), &st); err != nil || st.Mode&0o7777 != tc.mode {
					t.Errorf("%s: mode %o after the change, want %o (%v)", tc.name, st.Mode&0o7777, tc.mode, err)
				}
			}
			if err := ChmodNoFollow(fd, "link", 0o600); !errors.Is(err, unix.EOPNOTSUPP) {
				t.Errorf("a symlink: %v, want EOPNOTSUPP", err)
			}
			var st unix.Stat_t
			if err := unix.Stat(target, &st); err != nil || st.Mode&0o7777 != 0o644 {
				t.Errorf("the symlink's target changed to %o (%v)", st.Mode&0o7777, err)
			}
			if err := ChmodNoFollow(fd, "missing", 0o600); !IsNotExist(err) {
				t.Errorf("a missing entry: %v, want ENOENT", err)
			}
			if !mode.noFchmodat2 && noFchmodat2.Load() {
				t.Log("this kernel has no fchmodat2 (Linux 6.6+): the O_PATH way ran in both")
			}
		})
	}
}
