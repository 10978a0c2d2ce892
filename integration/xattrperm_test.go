package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// viewOf is "UID:GID:PERM" of path (lstat).
func viewOf(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatalf("lstat %s: %v", path, err)
	}
	return ownerMode(&st)
}

func ownerMode(st *unix.Stat_t) string {
	return fmt.Sprintf("%d:%d:%o", st.Uid, st.Gid, st.Mode&0o7777)
}

// TestXattrPermissions checks fuse-overlayfs's xattr_permissions: chown and chmod through
// the mount are kept in an override xattr (1: security.fuseoverlayfs.override_stat, 2:
// user.containers.override_stat) while the files in the upper stay the daemon's; the
// view shows the override, after a remount too; lowers marked with overrides show
// theirs; the override never shows in listxattr.
func TestXattrPermissions(t *testing.T) {
	lower := layer{"f": file("f"), "d/g": file("g"), "keep": file("k").mode(0o640)}
	for _, tt := range []struct {
		value string
		attr  string
	}{{"1", "security.fuseoverlayfs.override_stat"}, {"2", "user.containers.override_stat"}} {
		t.Run("xattr_permissions="+tt.value+" keeps owners and modes in "+tt.attr, func(t *testing.T) {
			m := newTestMountOpts(t, fuseKind, mountOpts{extra: "xattr_permissions=" + tt.value}, lower, layer{})
			steps := []struct {
				what string
				err  error
			}{
				{"chown f", os.Lchown(join(m.dir, "f"), 5, 6)},
				{"chmod f", os.Chmod(join(m.dir, "f"), 0o600)},
				{"create n", os.WriteFile(join(m.dir, "n"), []byte("n"), 0o640)},
				{"chown n", os.Lchown(join(m.dir, "n"), 7, 8)},
				{"mkdir nd", unix.Mkdir(join(m.dir, "nd"), 0o711)},
				{"chown d/g", os.Lchown(join(m.dir, "d/g"), 9, -1)},
				{"chmod d", os.Chmod(join(m.dir, "d"), 0o750)},
			}
			for _, s := range steps {
				if s.err != nil {
					t.Fatalf("%s: %v", s.what, s.err)
				}
			}
			want := map[string]string{"f": "5:6:600", "n": "7:8:640", "nd": "0:0:711", "d/g": "9:0:644", "d": "0:0:750", "keep": "0:0:640"}
			check := func(when string) {
				for p, w := range want {
					if got := viewOf(t, join(m.dir, p)); got != w {
						t.Errorf("%s: %s shows %s, want %s", when, p, got, w)
					}
				}
			}
			check("mounted")
			m.remount()
			check("after a remount")
			if names, err := listxattr(join(m.dir, "f")); err != nil || strings.Contains(strings.Join(names, " "), "override") {
				t.Errorf("listxattr f = %q, %v: the override shows", names, err)
			}
			m.unmount()
			for p, w := range want {
				if p == "keep" {
					continue // never changed: not in the upper
				}
				full := filepath.Join(m.upper, p)
				v, err := getxattr(full, tt.attr)
				if err != nil || v != w {
					t.Errorf("upper %s: %s = %q, %v; want %q", p, tt.attr, v, err, w)
				}
				var st unix.Stat_t
				if err := unix.Lstat(full, &st); err == nil && (st.Uid != 0 || st.Mode&0o755 != 0o755) {
					t.Errorf("upper %s is %s: the real file should stay the daemon's, readable by it", p, ownerMode(&st))
				}
			}
			if v, err := getxattr(m.upper, tt.attr); err != nil || v == "" {
				t.Errorf("the upper root is not marked with %s: %q, %v", tt.attr, v, err)
			}
		})
	}
	t.Run("a lower layer marked with overrides shows them without the option", func(t *testing.T) {
		m := newTestMountOpts(t, fuseKind, mountOpts{}, lower, layer{})
		m.unmount()
		for p, v := range map[string]string{".": "1:2:750", "f": "3:4:100640"} {
			if err := unix.Setxattr(filepath.Join(m.lowers[0], p), "user.containers.override_stat", []byte(v), 0); err != nil {
				t.Fatal(err)
			}
		}
		m.mount()
		for p, w := range map[string]string{"f": "3:4:640", "d/g": "0:0:644"} {
			if got := viewOf(t, join(m.dir, p)); got != w {
				t.Errorf("%s shows %s, want %s", p, got, w)
			}
		}
	})
	t.Run("an upper written by fuse-overlayfs with xattr_permissions=2 reads the same", func(t *testing.T) {
		requireTools(t, "fuse-overlayfs")
		m := newTestMountOpts(t, fuseKind, mountOpts{}, lower, layer{})
		m.unmount()
		out, err := exec.Command("fuse-overlayfs", "-o", m.optionString()+",xattr_permissions=2", m.dir).CombinedOutput()
		if err != nil {
			t.Skipf("fuse-overlayfs: %v: %s", err, out)
		}
		m.mounted = true
		if err := os.Lchown(join(m.dir, "f"), 5, 6); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(join(m.dir, "nd"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(join(m.dir, "nd"), 7, 8); err != nil {
			t.Fatal(err)
		}
		theirs := map[string]string{}
		for _, p := range []string{"f", "nd", "d/g"} {
			theirs[p] = viewOf(t, join(m.dir, p))
		}
		m.unmount()
		m.extra = "xattr_permissions=2"
		m.mount()
		for p, w := range theirs {
			if got := viewOf(t, join(m.dir, p)); got != w {
				t.Errorf("%s: fuse-overlayfs showed %s, cowfs shows %s", p, w, got)
			}
		}
	})
}
