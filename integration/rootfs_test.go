package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestContainerRootfs runs a workload (workload_test.go) inside a container
// whose rootfs is the test image (image_test.go) mounted with cowfs, started
// by crun from an OCI bundle, by bwrap and by unshare+chroot; the same runner
// runs the same workload on a kernel overlayfs mount of the same layers. Then,
// from outside: the merged views and the upper directories of the two are
// equal, the kernel mounts cowfs's upper with the same result, a remount of
// cowfs shows the same tree with every deleted name still gone, and the lower
// layers are bit-identical to before.
func TestContainerRootfs(t *testing.T) {
	requireMounts(t)
	for _, base := range []struct {
		name   string
		debian bool
	}{
		{"a busybox-static base", false},
		{"a Debian minbase base with a local .deb installed by dpkg", true},
	} {
		t.Run(base.name, func(t *testing.T) {
			if base.debian {
				if ok, why := useDebian(); !ok {
					t.Skip(why)
				}
			}
			im := buildTestImage(t, base.debian)
			before := im.lowerSnapshots()
			for _, r := range rootfsRunners {
				t.Run(r.name, func(t *testing.T) {
					if why := r.unavailable(); why != "" {
						t.Skip(why)
					}
					checkRootfsRunner(t, im, r)
				})
			}
			im.checkLowersUnchanged(t, before)
		})
	}
}

func checkRootfsRunner(t *testing.T, im *testImage, r rootfsRunner) {
	script := workloadScript(im)
	type result struct{ merged, upper snapshot }
	results := map[mountKind]result{}
	var cowfsMount *testMount
	for _, kind := range []mountKind{kernelKind, fuseKind} {
		m := mountImage(t, kind, im, "")
		start := time.Now()
		out, err := r.run(t, m.dir, script)
		if err != nil || !strings.Contains(out, workloadDone) {
			t.Fatalf("%s on %s: %v\n%s", r.name, kind, err, lastLines([]byte(out), 40))
		}
		t.Logf("%s: the workload ran on %s in %v", r.name, kind, time.Since(start).Round(time.Millisecond))
		merged := takeSnapshot(m.dir, mergedView)
		if kind == fuseKind {
			cowfsMount = m
			m.remount()
			if d := diffSnapshots("before", merged, "remounted", takeSnapshot(m.dir, mergedView)); d != "" {
				t.Errorf("a remount of cowfs shows another tree:\n%s", d)
			}
			checkDeletedNames(t, m.dir, allDeleted(im))
		}
		m.unmount()
		results[kind] = result{merged, takeSnapshot(m.upper, upperDir)}
	}
	k, c := results[kernelKind], results[fuseKind]
	if d := diffSnapshots("kernel", k.merged, "cowfs", c.merged); d != "" {
		t.Errorf("merged views differ:\n%s", d)
	}
	if d := diffSnapshots("kernel", k.upper, "cowfs", c.upper); d != "" {
		t.Errorf("upper directories differ:\n%s", d)
	}
	// The kernel reads what cowfs wrote: its mount of cowfs's upper shows
	// the tree the kernel's own run made.
	cowfsMount.kind = kernelKind
	os.RemoveAll(cowfsMount.work)
	if err := os.Mkdir(cowfsMount.work, 0o755); err != nil {
		t.Fatal(err)
	}
	cowfsMount.mount()
	// (It shows cowfs's private xattr, trusted.cowfs.origin, as it shows
	// any trusted.* name it does not know.)
	if d := diffSnapshots("kernel", k.merged, "kernel-on-cowfs-upper", dropCowfsXattrs(takeSnapshot(cowfsMount.dir, mergedView))); d != "" {
		t.Errorf("kernel overlayfs over cowfs's upper shows another tree:\n%s", d)
	}
	checkDeletedNames(t, cowfsMount.dir, allDeleted(im))
	cowfsMount.unmount()
}

// cowfsXattr matches one of cowfs's private xattrs in a description.
var cowfsXattr = regexp.MustCompile(`(trusted|user)\.cowfs\.[a-z_]+="(?:[^"\\]|\\.)*",?`)

// dropCowfsXattrs removes cowfs's private xattrs from a snapshot.
func dropCowfsXattrs(s snapshot) snapshot {
	out := snapshot{}
	for p, d := range s {
		d = cowfsXattr.ReplaceAllString(d, "")
		d = strings.Replace(strings.Replace(d, ",}", "}", 1), " xattrs{}", "", 1)
		out[p] = d
	}
	return out
}

// checkDeletedNames fails t for every name (absolute in the container) that
// lstat finds under root, or that fails with anything but ENOENT.
func checkDeletedNames(t *testing.T, root string, names []string) {
	t.Helper()
	for _, n := range names {
		var st unix.Stat_t
		err := unix.Lstat(filepath.Join(root, n), &st)
		if !errors.Is(err, unix.ENOENT) {
			t.Errorf("deleted %s: lstat gives %v, want ENOENT", n, err)
		}
	}
}

// rootfsRunner starts a container on a rootfs directory and runs a shell
// script in it, returning its output.
type rootfsRunner struct {
	name string
	// unavailable is why the runner cannot run here ("" when it can).
	unavailable func() string
	run         func(t *testing.T, rootfs, script string) (string, error)
}

var rootfsRunners = []rootfsRunner{
	{"crun from an OCI bundle", needCommand("crun"), runCrun},
	{"bwrap with the mount bound on /", needCommand("bwrap"), runBwrap},
	{"unshare --mount --pid --fork chroot", needCommand("unshare", "chroot"), runChroot},
}

func needCommand(names ...string) func() string {
	return func() string {
		for _, n := range names {
			if _, err := exec.LookPath(n); err != nil {
				return fmt.Sprintf("%s is not installed (scripts/setup.sh installs it)", n)
			}
		}
		return ""
	}
}

// runTimeout bounds one container run.
const runTimeout = 3 * time.Minute

func runCommand(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (after %v)", ctx.Err(), runTimeout)
	}
	return string(out), err
}

func runBwrap(t *testing.T, rootfs, script string) (string, error) {
	return runCommand("bwrap", "--bind", rootfs, "/", "--proc", "/proc", "--dev", "/dev",
		"--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent", "--cap-add", "ALL",
		"--chdir", "/", "/bin/sh", "-c", script)
}

func runChroot(t *testing.T, rootfs, script string) (string, error) {
	return runCommand("unshare", "--mount", "--pid", "--fork", "chroot", rootfs, "/bin/sh", "-c", script)
}

// runCrun writes an OCI bundle whose root is rootfs and runs it with crun,
// without cgroups (this machine has a hybrid cgroup layout crun refuses; no
// cgroup is needed to run a workload). The container is deleted at cleanup.
func runCrun(t *testing.T, rootfs, script string) (string, error) {
	bundle, state := t.TempDir(), t.TempDir()
	caps := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
		"CAP_SETUID", "CAP_SETPCAP", "CAP_MKNOD", "CAP_SYS_CHROOT", "CAP_AUDIT_WRITE"}
	config := map[string]any{
		"ociVersion": "1.0.2",
		"process": map[string]any{
			"user":         map[string]any{"uid": 0, "gid": 0},
			"args":         []string{"/bin/sh", "-c", script},
			"env":          []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"},
			"cwd":          "/",
			"capabilities": map[string]any{"bounding": caps, "effective": caps, "permitted": caps},
			"rlimits":      []map[string]any{{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}},
		},
		"root":     map[string]any{"path": rootfs},
		"hostname": "cowfs-crun",
		"mounts": []map[string]any{
			{"destination": "/proc", "type": "proc", "source": "proc"},
			{"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		},
		"linux": map[string]any{
			"namespaces": []map[string]any{{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}},
		},
	}
	b, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("cowfs-test-%d", time.Now().UnixNano())
	t.Cleanup(func() {
		if out, err := exec.Command("crun", "--root", state, "delete", "--force", id).CombinedOutput(); err != nil &&
			!strings.Contains(string(out), "does not exist") && !strings.Contains(string(out), "No such file") {
			t.Logf("crun delete %s: %v: %s", id, err, out)
		}
	})
	// crun refuses a hybrid layout (v1 controllers plus a v2 mount) even
	// without cgroups; the v2 mount is hidden in a mount namespace of the
	// test's own, the machine keeps it.
	return runCommand("unshare", "--mount", "--propagation", "private", "sh", "-c",
		`if mountpoint -q /sys/fs/cgroup/unified; then umount -l /sys/fs/cgroup/unified; fi; exec crun "$@"`, "sh",
		"--cgroup-manager=disabled", "--root", state, "run", "--bundle", bundle, id)
}
