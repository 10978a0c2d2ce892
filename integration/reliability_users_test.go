package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// asUserErr runs a command as uid/gid 1000 (no groups) and records how it ended, the
// message turned into an errno name so that kernel and cowfs results compare.
func (r *rec) asUserErr(label string, args ...string) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	msg := strings.ReplaceAll(string(out), r.mnt, "MNT")
	if err == nil {
		r.val(label, "ok "+strings.TrimSpace(msg))
		return
	}
	for text, name := range map[string]string{"Permission denied": "EACCES", "Operation not permitted": "EPERM",
		"No such file": "ENOENT", "Operation not supported": "EOPNOTSUPP", "No such attribute": "ENODATA"} {
		if strings.Contains(msg, text) {
			r.val(label, name)
			return
		}
	}
	r.val(label, "failed: "+strings.TrimSpace(msg))
}

// visibleXattrs lists the attribute names root sees on path through the mount.
func (r *rec) visibleXattrs(label, path string) {
	names, err := listxattr(r.p(path))
	if err != nil {
		r.errno(label, err)
		return
	}
	var shown []string
	for _, n := range names {
		if n != "security.selinux" && !strings.HasPrefix(n, "system.") {
			shown = append(shown, n)
		}
	}
	slices.Sort(shown)
	r.val(label, strings.Join(shown, ","))
}

// Users inside the mount, compared with kernel overlayfs: an unprivileged caller cannot
// read or change what permissions forbid, cannot set trusted.* or security.* attributes
// it could not set on a normal filesystem, and nobody, root included, sees or changes
// the internal markers (overlay's, fuse-overlayfs's and cowfs's own attributes).
func TestUsersInsideTheMount(t *testing.T) {
	if _, err := exec.LookPath("setfattr"); err != nil {
		t.Skip("setfattr is not installed (the attr package; scripts/setup.sh installs it)")
	}
	pub := layer{
		"pub":        dir().mode(0o777),
		"pub/mine":   file("mine").owner(1000, 1000).mode(0o644),
		"pub/roots":  file("roots").mode(0o644),
		"pub/secret": file("secret").mode(0o600),
		"pub/sub":    dir().owner(1000, 1000),
	}
	runCases(t, []behaviourCase{
		{
			name:   "an unprivileged caller cannot set trusted or security attributes, nor touch another's file",
			lowers: []layer{pub},
			op: ops(func(r *rec) {
				r.asUserErr("set trusted.x on its own file", "setfattr", "-n", "trusted.x", "-v", "1", r.p("pub/mine"))
				r.asUserErr("set security.x on its own file", "setfattr", "-n", "security.x", "-v", "1", r.p("pub/mine"))
				r.asUserErr("set trusted.overlay.opaque on its own dir", "setfattr", "-n", "trusted.overlay.opaque", "-v", "y", r.p("pub/sub"))
				r.asUserErr("set user.overlay.opaque on its own dir", "setfattr", "-n", "user.overlay.opaque", "-v", "y", r.p("pub/sub"))
				r.asUserErr("set user.cowfs.origin on its own file", "setfattr", "-n", "user.cowfs.origin", "-v", "1", r.p("pub/mine"))
				r.asUserErr("set user.x on its own file", "setfattr", "-n", "user.x", "-v", "1", r.p("pub/mine"))
				r.asUserErr("set user.x on root's file", "setfattr", "-n", "user.x", "-v", "1", r.p("pub/roots"))
				r.asUserErr("set security.x on root's file", "setfattr", "-n", "security.x", "-v", "1", r.p("pub/roots"))
				r.asUserErr("read root's 0600 file", "cat", r.p("pub/secret"))
				r.asUserErr("write root's 0644 file", "sh", "-c", "echo x >> "+r.p("pub/roots"))
				r.asUserErr("chmod root's file", "chmod", "777", r.p("pub/roots"))
				r.asUserErr("chown its own file to root", "chown", "0", r.p("pub/mine"))
				r.asUserErr("trusted attributes it can see", "getfattr", "--absolute-names", "-m", "trusted\\.", "-d", r.p("pub/mine"))
				r.asUserErr("user attributes it can see", "getfattr", "--absolute-names", "-m", "-", "-d", r.p("pub/mine"))
				r.asUserErr("user.overlay.opaque of its dir", "getfattr", "--absolute-names", "-n", "user.overlay.opaque", r.p("pub/sub"))
				r.ls("pub/sub")
				r.read("pub/roots")
			}),
			want: []string{"set trusted.x on its own file: EPERM", "read root's 0600 file: EACCES", "write root's 0644 file: EACCES"},
			upperDiffers: "a user's user.overlay.opaque is stored as is by the kernel (it reads only trusted.* " +
				"markers without userxattr) and escaped by cowfs, which reads user.overlay.* markers too (rootless formats)",
		},
		{
			name: "root through the mount sees none of the markers of an opaque directory, a whiteout's directory or a copy-up",
			lowers: []layer{
				{"d": dir().opaqueDir(), "d/top": file("t"), "w/kept": file("k"), "w/gone": whiteout(), "f": file("f").xattr("user.mine", "m")},
				{"d/below": file("b"), "w/gone": file("g"), "w/kept": file("k0")},
			},
			op: ops(func(r *rec) {
				r.visibleXattrs("attributes of the opaque dir", "d")
				r.visibleXattrs("attributes of the dir with a whiteout", "w")
				r.errno("chmod f (a copy-up)", unix.Chmod(r.p("f"), 0o600))
				r.visibleXattrs("attributes of the copied-up f", "f")
				r.errno("mkdir w2 then remove a lower name in w", os.Remove(r.p("w/kept")))
				r.visibleXattrs("attributes of w after a removal", "w")
				_, err := getxattr(r.p("d"), "trusted.overlay.opaque")
				r.errno("get trusted.overlay.opaque of the opaque dir", err)
				_, err = getxattr(r.p("f"), "trusted.cowfs.origin")
				r.errno("get trusted.cowfs.origin of the copied-up f", err)
				r.ls("d")
				r.ls("w")
			}),
			want: []string{"attributes of the copied-up f: user.mine", "get trusted.cowfs.origin of the copied-up f: ENODATA"},
		},
		{
			name:   "root's own trusted.overlay and cowfs attributes are stored escaped and mean nothing",
			lowers: []layer{{"d/below": file("b"), "f": file("f")}},
			op: ops(func(r *rec) {
				r.errno("set trusted.overlay.opaque=y on d", unix.Setxattr(r.p("d"), "trusted.overlay.opaque", []byte("y"), 0))
				r.errno("set trusted.overlay.whiteout on f", unix.Setxattr(r.p("f"), "trusted.overlay.whiteout", []byte("y"), 0))
				r.errno("set trusted.cowfs.origin on f", unix.Setxattr(r.p("f"), "trusted.cowfs.origin", []byte("forged"), 0))
				v, err := getxattr(r.p("d"), "trusted.overlay.opaque")
				r.val("trusted.overlay.opaque of d reads back", fmt.Sprint(v, " ", errnoString(err)))
				r.ls("d")
				r.read("f")
			}),
			afterRemount: func(t *testing.T, mnt string, before result) result {
				r := &rec{mnt: mnt, res: result{kept: map[string]uint64{}}}
				r.ls("d")
				r.read("f")
				return r.res
			},
			want: []string{"trusted.overlay.opaque of d reads back: y ok"},
		},
	})
}

// On cowfs: root's own trusted.cowfs.origin on a file does not change its inode number,
// now or after a remount (a forged origin would).
func TestUsersCannotForgeOrigin(t *testing.T) {
	m := newTestMount(t, fuseKind, layer{"f": file("f"), "g": file("g")}, layer{})
	var before, after unix.Stat_t
	if err := unix.Stat(filepath.Join(m.dir, "f"), &before); err != nil {
		t.Fatal(err)
	}
	var g unix.Stat_t
	unix.Stat(filepath.Join(m.dir, "g"), &g)
	forged := fmt.Sprint(g.Ino)
	for _, name := range []string{"trusted.cowfs.origin", "user.cowfs.origin"} {
		if err := unix.Setxattr(filepath.Join(m.dir, "f"), name, []byte(forged), 0); err != nil {
			t.Fatalf("set %s: %v", name, err)
		}
	}
	m.remount()
	time.Sleep(10 * time.Millisecond)
	if err := unix.Stat(filepath.Join(m.dir, "f"), &after); err != nil {
		t.Fatal(err)
	}
	if after.Ino != before.Ino {
		t.Errorf("f's inode number went from %d to %d after root set cowfs.origin through the mount", before.Ino, after.Ino)
	}
	m.unmount()
	stored, _ := listxattr(filepath.Join(m.upper, "f"))
	for _, n := range stored {
		if n == "trusted.cowfs.origin" {
			if v, _ := getxattr(filepath.Join(m.upper, "f"), n); v == forged {
				t.Errorf("the upper's real trusted.cowfs.origin holds the forged value")
			}
		}
	}
	t.Logf("attributes of the upper f: %q", stored)
}
