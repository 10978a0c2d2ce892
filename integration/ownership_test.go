package integration

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOwnershipOptions checks fuse-overlayfs's ownership options, which kernel
// overlayfs does not have: cowfs alone, against fixed expectations.
func TestOwnershipOptions(t *testing.T) {
	lower := layer{
		"root-owned": file("r"),
		"user1":      file("u").owner(1, 1),
		"far":        file("f").owner(70000, 70000),
		"d/sub":      dir(),
	}
	owner := func(t *testing.T, path string) (uint32, uint32, uint64) {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Uid, st.Gid, uint64(st.Nlink)
	}
	t.Run("uidmapping shows stored owners shifted, unmapped ones as the overflow id, and stores chowns shifted back", func(t *testing.T) {
		m := newTestMountOpts(t, fuseKind, mountOpts{extra: "uidmapping=:0:100000:65536,gidmapping=0:200000:65536"}, lower, layer{})
		for _, c := range []struct {
			path     string
			uid, gid uint32
		}{{"root-owned", 100000, 200000}, {"user1", 100001, 200001}, {"far", 65534, 65534}} {
			if u, g, _ := owner(t, join(m.dir, c.path)); u != c.uid || g != c.gid {
				t.Errorf("%s shows %d:%d, want %d:%d", c.path, u, g, c.uid, c.gid)
			}
		}
		if err := os.Lchown(join(m.dir, "root-owned"), 100007, 200008); err != nil {
			t.Fatal(err)
		}
		if u, g, _ := owner(t, join(m.upper, "root-owned")); u != 7 || g != 8 {
			t.Errorf("chown to 100007:200008 stored %d:%d, want 7:8", u, g)
		}
		if u, g, _ := owner(t, join(m.dir, "root-owned")); u != 100007 || g != 200008 {
			t.Errorf("after chown the view shows %d:%d", u, g)
		}
	})
	t.Run("squash_to_root shows every owner as root, squash_to_uid and squash_to_gid win over it", func(t *testing.T) {
		m := newTestMountOpts(t, fuseKind, mountOpts{extra: "squash_to_root,squash_to_gid=42"}, lower, layer{})
		for _, p := range []string{"root-owned", "user1", "far", "d"} {
			if u, g, _ := owner(t, join(m.dir, p)); u != 0 || g != 42 {
				t.Errorf("%s shows %d:%d, want 0:42", p, u, g)
			}
		}
	})
	t.Run("static_nlink shows directories with nlink 1", func(t *testing.T) {
		m := newTestMountOpts(t, fuseKind, mountOpts{extra: "static_nlink"}, lower, layer{})
		if _, _, n := owner(t, join(m.dir, "d")); n != 1 {
			t.Errorf("d has nlink %d, want 1", n)
		}
	})
}
