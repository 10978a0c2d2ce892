package integration

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// aclReadFor is a system.posix_acl_access value: owner rw, user uid r, group and
// others nothing, mask r.
func aclReadFor(uid uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2) // POSIX_ACL_XATTR_VERSION
	for _, e := range []struct {
		tag, perm uint16
		id        uint32
	}{{0x01, 6, ^uint32(0)}, {0x02, 4, uid}, {0x04, 0, ^uint32(0)}, {0x10, 4, ^uint32(0)}, {0x20, 0, ^uint32(0)}} {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return b
}

// readAs reads path as uid (setpriv) and returns the error, if any.
func readAs(t *testing.T, uid int, path string) error {
	t.Helper()
	out, err := exec.Command("setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups", "cat", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// TestMountOptions checks the options containers/storage passes that the ownership
// tests do not cover, each doing its job, on cowfs alone.
func TestMountOptions(t *testing.T) {
	lower := layer{
		"root-owned": file("r"),
		"user1":      file("u").owner(1, 1),
		"user2":      file("u2").owner(2, 2),
		"big":        file(strings.Repeat("x", 1<<16)),
		"secret":     file("s").mode(0o600),
		"d/sub":      dir(),
	}
	owner := func(t *testing.T, path string) (uint32, uint32) {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Uid, st.Gid
	}
	t.Run("uidmapping and gidmapping with several ranges map each id through its own range", func(t *testing.T) {
		m := newTestMountOpts(t, fuseKind, mountOpts{extra: "uidmapping=0:1000:1:1:100000:65535,gidmapping=:0:2000:1:1:200000:65535"}, lower, layer{})
		for _, c := range []struct {
			path     string
			uid, gid uint32
		}{{"root-owned", 1000, 2000}, {"user1", 100000, 200000}, {"user2", 100001, 200001}} {
			if u, g := owner(t, join(m.dir, c.path)); u != c.uid || g != c.gid {
				t.Errorf("%s shows %d:%d, want %d:%d", c.path, u, g, c.uid, c.gid)
			}
		}
		// A file made by view uid 1000 (the first range) is stored as 0; by 100001 as 2.
		if err := os.WriteFile(join(m.dir, "new"), []byte("n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(join(m.dir, "new"), 100001, 2000); err != nil {
			t.Fatal(err)
		}
		if u, g := owner(t, join(m.upper, "new")); u != 2 || g != 0 {
			t.Errorf("chown to 100001:2000 stored %d:%d, want 2:0", u, g)
		}
	})
	t.Run("squash_to_uid shows every owner as that uid and keeps the groups", func(t *testing.T) {
		m := newTestMountOpts(t, fuseKind, mountOpts{extra: "squash_to_uid=77"}, lower, layer{})
		for _, c := range []struct {
			path string
			gid  uint32
		}{{"root-owned", 0}, {"user1", 1}, {"d", 0}} {
			if u, g := owner(t, join(m.dir, c.path)); u != 77 || g != c.gid {
				t.Errorf("%s shows %d:%d, want 77:%d", c.path, u, g, c.gid)
			}
		}
	})
	t.Run("the ACL of a file is enforced, and with noacl it is not", func(t *testing.T) {
		requireTools(t, "setpriv")
		for _, noacl := range []bool{false, true} {
			extra := ""
			if noacl {
				extra = "noacl"
			}
			m := newTestMountOpts(t, fuseKind, mountOpts{extra: extra}, lower, layer{})
			if err := unix.Setxattr(join(m.dir, "secret"), "system.posix_acl_access", aclReadFor(rootlessUID), 0); err != nil {
				t.Fatalf("setting an ACL (%s): %v", extra, err)
			}
			err := readAs(t, rootlessUID, join(m.dir, "secret"))
			switch {
			case !noacl && err != nil:
				t.Errorf("an ACL grants uid %d read, yet: %v", rootlessUID, err)
			case noacl && err == nil:
				t.Errorf("with noacl uid %d read a 0600 file of root's through an ACL", rootlessUID)
			}
		}
	})
	t.Run("a missing SELinux label is EOPNOTSUPP where SELinux does not run, so ls -l asks once; selinux_enodata keeps ENODATA", func(t *testing.T) {
		if selinuxRuns(t) {
			t.Skip("SELinux runs on this kernel: it answers for security.selinux itself, and cowfs keeps ENODATA")
		}
		requireTools(t, "strace", "ls")
		const label, value = "security.selinux", "system_u:object_r:etc_t:s0"
		labeled := layer{"labeled": file("l").xattr(label, value)}
		for i := range 20 {
			labeled[fmt.Sprintf("f%02d", i)] = file("x")
		}
		for _, c := range []struct {
			extra   string
			missing error
			lsAsks  int // the directory named, then its 21 entries
		}{
			{"", unix.EOPNOTSUPP, 1},
			{"selinux_enodata", unix.ENODATA, 22},
		} {
			m := newTestMountOpts(t, fuseKind, mountOpts{extra: c.extra}, labeled, layer{})
			if v, err := getxattr(join(m.dir, "labeled"), label); err != nil || v != value {
				t.Errorf("%q: the lower file's label reads %q, %v; want %q", c.extra, v, err, value)
			}
			if _, err := getxattr(join(m.dir, "f00"), label); !errors.Is(err, c.missing) {
				t.Errorf("%q: a file without a label: %v, want %v", c.extra, err, c.missing)
			}
			if err := unix.Lsetxattr(join(m.dir, "f01"), label, []byte(value), 0); err != nil {
				t.Fatalf("%q: setting a label: %v", c.extra, err)
			}
			if v, err := getxattr(join(m.dir, "f01"), label); err != nil || v != value {
				t.Errorf("%q: a label set through the mount reads %q, %v; want %q", c.extra, v, err, value)
			}
			if err := unix.Lremovexattr(join(m.dir, "f01"), label); err != nil {
				t.Fatalf("%q: removing the label: %v", c.extra, err)
			}
			trace := filepath.Join(t.TempDir(), "trace")
			if out, err := exec.Command("strace", "-f", "-o", trace, "-e", "trace=lgetxattr", "ls", "-l", m.dir).CombinedOutput(); err != nil {
				t.Fatalf("strace ls -l: %v: %s", err, out)
			}
			b, err := os.ReadFile(trace)
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(b), `"`+label+`"`); n != c.lsAsks {
				t.Errorf("%q: ls -l of a directory of 21 entries asked for %s %d times, want %d:\n%s", c.extra, label, n, c.lsAsks, b)
			}
		}
	})
	t.Run("lower directories given through symlinks are the directories they point to", func(t *testing.T) {
		m := newTestMountOpts(t, fuseKind, mountOpts{}, lower, layer{})
		m.unmount()
		rel := filepath.Join(m.root, "rel-link")
		abs := filepath.Join(m.root, "abs-link")
		if err := os.Symlink("lower0", rel); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(m.lowers[0], abs); err != nil {
			t.Fatal(err)
		}
		for _, link := range []string{rel, abs} {
			m.lowers = []string{link}
			m.mount()
			if b, err := os.ReadFile(join(m.dir, "root-owned")); err != nil || string(b) != "r" {
				t.Errorf("through %s: read root-owned = %q, %v", link, b, err)
			}
			if err := os.WriteFile(join(m.dir, "x"), []byte("x"), 0o644); err != nil {
				t.Errorf("through %s: write: %v", link, err)
			}
			m.unmount()
		}
		if _, err := os.Lstat(filepath.Join(m.lowers[0], "x")); err == nil {
			t.Error("a write through the mount reached the lower layer behind the symlink")
		}
	})
	t.Run("lowers only, with no upperdir or workdir, is a read-only mount", func(t *testing.T) {
		m := newTestMountOpts(t, fuseKind, mountOpts{}, lower, layer{})
		m.unmount()
		out, err := exec.Command(fuseProg, "-o", "lowerdir="+strings.Join(m.lowers, ":"), m.dir).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		m.mounted = true
		if b, err := os.ReadFile(join(m.dir, "root-owned")); err != nil || string(b) != "r" {
			t.Errorf("read root-owned = %q, %v", b, err)
		}
		for what, err := range map[string]error{
			"create": os.WriteFile(join(m.dir, "new"), nil, 0o644),
			"unlink": unix.Unlink(join(m.dir, "user1")),
			"chmod":  unix.Chmod(join(m.dir, "user1"), 0o600),
			"mkdir":  unix.Mkdir(join(m.dir, "nd"), 0o755),
		} {
			if !errors.Is(err, unix.EROFS) {
				t.Errorf("%s on a mount of lowers only: %v, want EROFS", what, err)
			}
		}
	})
	t.Run("volatile copies up without fsync, the default fsyncs", func(t *testing.T) {
		requireTools(t, "strace")
		for _, volatile := range []bool{false, true} {
			extra := ""
			if volatile {
				extra = "volatile"
			}
			n := fsyncsOfCopyUp(t, lower, extra)
			switch {
			case volatile && n != 0:
				t.Errorf("with volatile the daemon called fsync %d times", n)
			case !volatile && n == 0:
				t.Error("without volatile a copy-up called no fsync")
			}
		}
	})
}

// fsyncsOfCopyUp runs cowfs in the foreground under strace, copies a lower file up by
// appending to it, and counts the daemon's fsync and fdatasync calls.
func fsyncsOfCopyUp(t *testing.T, lower layer, extra string) int {
	t.Helper()
	m := newTestMountOpts(t, fuseKind, mountOpts{}, lower, layer{})
	m.unmount()
	trace := filepath.Join(m.root, "strace.log")
	args := []string{"-f", "-qq", "-e", "trace=fsync,fdatasync,syncfs", "-o", trace, fuseProg, "-f", "-o", m.optionString()}
	if extra != "" {
		args = append(args, "-o", extra)
	}
	cmd := exec.Command("strace", append(args, m.dir)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		detach(m.dir)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
	})
	start := time.Now()
	defer func() { t.Logf("strace run with %q took %v", extra, time.Since(start)) }()
	for deadline := time.Now().Add(10 * time.Second); !isMountpoint(m.dir); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("cowfs under strace did not mount within 10 s")
		}
	}
	t.Logf("mounted after %v", time.Since(start))
	f, err := os.OpenFile(join(m.dir, "big"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("more")
	f.Close()
	if out, err := exec.Command("fusermount3", "-u", m.dir).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u: %v: %s", err, out)
	}
	t.Logf("unmounted after %v", time.Since(start))
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("cowfs under strace did not exit after the unmount")
	}
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "sync(") && !strings.Contains(l, "resumed>") {
			n++
		}
	}
	return n
}

// selinuxRuns reports whether the kernel runs SELinux (it registers selinuxfs only then).
func selinuxRuns(t *testing.T) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[len(f)-1] == "selinuxfs" {
			return true
		}
	}
	return false
}
