package integration

import (
	"fmt"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// rootlessUID is the ordinary user the unprivileged user namespace runs as; it needs
// no passwd entry (setpriv takes numbers).
const rootlessUID = 4242

// rootlessScript is run by sh with $1 the test directory (lower, upper, work, mnt,
// kmnt, kwork in it) and $2 the cowfs binary, $3 how to unmount cowfs ("umount" or
// "fusermount3 -u"), $4 "kernel" to mount kernel overlayfs (userxattr) over the same
// upper afterwards. It mounts cowfs in the foreground with -d (the log in daemon.log),
// runs a small workload, lists the merged tree into cowfs.list, unmounts and waits for
// the daemon, and lists the kernel's view of that upper into kernel.list.
const rootlessScript = `
set -u
cd "$1"
list() { (cd "$1" && find . -mindepth 1 -printf '%p %y %m %l\n' | LC_ALL=C sort && find . -type f -exec sha256sum {} + | LC_ALL=C sort); }
"$2" -d -o lowerdir=lower,upperdir=upper,workdir=work mnt 2>daemon.log &
pid=$!
i=0
until grep -q " $1/mnt " /proc/self/mountinfo; do
	i=$((i+1)); if [ $i -gt 200 ] || ! kill -0 $pid 2>/dev/null; then echo "cowfs did not mount"; tail -5 daemon.log; exit 1; fi
	sleep 0.05
done
set -e
echo new > mnt/new            # create
echo more >> mnt/f            # copy-up of data
chmod 600 mnt/g               # copy-up of metadata
rm mnt/h                      # a lower file: a whiteout
rm -rf mnt/d                  # a lower directory with files: a whiteout
mkdir mnt/d                   # over the whiteout: an opaque directory
echo x > mnt/d/x
rmdir mnt/e                   # an empty lower directory
mkdir -p mnt/n/m && echo deep > mnt/n/m/deep
ls mnt/d/a 2>/dev/null && { echo "d/a still found"; exit 1; }
list mnt > cowfs.list
$3 mnt
wait $pid || { echo "cowfs exited with $?"; exit 1; }
if [ "$4" = kernel ]; then
	if ! mount -t overlay overlay -o lowerdir=lower,upperdir=upper,workdir=kwork,userxattr kmnt 2>kernel.err; then
		echo "KERNEL-SKIP: $(cat kernel.err)"; echo done; exit 0
	fi
	list kmnt > kernel.list
	umount kmnt
fi
echo done
`

// rootlessDirs makes the layers of the rootless workload in a fresh directory that
// uid owns, with the cowfs binary copied where uid can run it.
func rootlessDirs(t *testing.T, uid int) (top, bin string) {
	t.Helper()
	requireMounts(t)
	if buildErr != nil {
		t.Fatalf("no FUSE program to test: %v", buildErr)
	}
	top, err := os.MkdirTemp("", "cowfs-rootless-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, m := range []string{"mnt", "kmnt"} {
			detach(filepath.Join(top, m))
		}
		os.RemoveAll(top)
	})
	if err := os.Chmod(top, 0o755); err != nil {
		t.Fatal(err)
	}
	lower := filepath.Join(top, "lower")
	if err := os.Mkdir(lower, 0o755); err != nil {
		t.Fatal(err)
	}
	writeLayer(t, lower, layer{
		"f": file("f\n"), "g": file("g\n"), "h": file("h\n"),
		"d/a": file("a"), "d/b": file("b"), "d/s/c": file("c"), "e": dir(), "keep/k": file("k"),
	}, true)
	for _, d := range []string{"upper", "work", "mnt", "kmnt", "kwork"} {
		if err := os.Mkdir(filepath.Join(top, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin = filepath.Join(top, "cowfs")
	if err := copyExecutable(fuseProg, bin); err != nil {
		t.Fatal(err)
	}
	if uid != 0 {
		if out, err := exec.Command("chown", "-R", fmt.Sprintf("%d:%d", uid, uid), top).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v: %s", err, out)
		}
	}
	return top, bin
}

// requireTools skips t when a command it runs is missing.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed: %v", tool, err)
		}
	}
}

// runRootless runs argv (which ends by running rootlessScript) with a time limit and
// returns its output; it fails t when the script fails.
func runRootless(t *testing.T, dir string, argv ...string) string {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%q did not finish within 60 s:\n%s", argv, out)
	}
	if err != nil || !strings.Contains(string(out), "done") {
		t.Fatalf("%q: %v\n%s\ndaemon log:\n%s", argv[:3], err, out, tail(filepath.Join(dir, "daemon.log"), 20))
	}
	return string(out)
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// checkRootlessUpper checks what the unprivileged cowfs wrote: user.overlay.* markers
// (no trusted.* ones), whiteouts in the format the daemon reported on its -d line, and
// that the line is there.
func checkRootlessUpper(t *testing.T, dir string) {
	t.Helper()
	log, _ := os.ReadFile(filepath.Join(dir, "daemon.log"))
	var fallback string
	for _, l := range strings.Split(string(log), "\n") {
		if strings.Contains(l, "unprivileged fallbacks:") {
			if fallback != "" {
				t.Errorf("more than one fallback line in the -d log:\n%s\n%s", fallback, l)
			}
			fallback = l
		}
	}
	t.Logf("daemon: %s", fallback)
	if !strings.Contains(fallback, "markers are user.overlay.* xattrs") {
		t.Errorf("the -d log does not report user.overlay.* markers; its fallback line: %q", fallback)
	}
	upper := filepath.Join(dir, "upper")
	if v, err := getxattr(filepath.Join(upper, "d"), userOpaqueXattr); err != nil || v != "y" {
		t.Errorf("upper d: %s = %q, %v; want y", userOpaqueXattr, v, err)
	}
	filepath.Walk(upper, func(path string, _ os.FileInfo, err error) error {
		names, _ := listxattr(path)
		for _, n := range names {
			if strings.HasPrefix(n, "trusted.") {
				t.Errorf("upper %s has %s; an unprivileged mount cannot write trusted xattrs", path, n)
			}
		}
		return nil
	})
	charDev := !strings.Contains(fallback, "whiteouts are .wh.NAME files")
	for _, name := range []string{"h", "d/a", "e"} {
		if name == "d/a" {
			continue // inside the opaque d: no whiteout needed
		}
		var st unix.Stat_t
		errChar := unix.Lstat(filepath.Join(upper, name), &st)
		_, errFile := os.Lstat(filepath.Join(upper, filepath.Dir(name), whPrefix+filepath.Base(name)))
		switch {
		case charDev && (errChar != nil || !isWhiteoutStat(&st)):
			t.Errorf("upper %s: want a char 0/0 whiteout (%v)", name, errChar)
		case !charDev && errFile != nil:
			t.Errorf("upper %s: want a .wh. whiteout file: %v", name, errFile)
		}
	}
}

// compareLists compares the cowfs and kernel listings the script wrote.
func compareLists(t *testing.T, dir string) {
	t.Helper()
	c, err1 := os.ReadFile(filepath.Join(dir, "cowfs.list"))
	k, err2 := os.ReadFile(filepath.Join(dir, "kernel.list"))
	if err1 != nil || err2 != nil {
		t.Fatalf("listings: %v, %v", err1, err2)
	}
	if d := diffLines(strings.Split(string(k), "\n"), strings.Split(string(c), "\n")); d != "" {
		t.Errorf("kernel overlayfs reads the upper cowfs wrote differently (kernel=-, cowfs=+):\n%s", d)
	}
	if !strings.Contains(string(c), "./d/x f") || strings.Contains(string(c), "./d/a") || strings.Contains(string(c), "./h ") {
		t.Errorf("the cowfs listing misses the workload's changes:\n%s", c)
	}
}

// userns reports whether this machine lets uid make a user namespace.
func userns(t *testing.T, uid int) {
	t.Helper()
	argv := []string{"unshare", "-Urm", "true"}
	if uid != 0 {
		argv = append([]string{"setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups"}, argv...)
	}
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Skipf("cannot create a user namespace as uid %d: %v: %s", uid, err, out)
	}
}

// privateFuse is the shell prefix that puts a private 0666 /dev/fuse in the current
// (private) mount namespace, so that an unprivileged opener works; the host's device
// keeps its mode.
func privateFuse(dir string) string {
	node := filepath.Join(dir, "fuse-node")
	return fmt.Sprintf(`mknod %[1]s c 10 229 && chmod 0666 %[1]s && mount --bind %[1]s /dev/fuse || exit 1; `, node)
}

// TestRootlessInUserNamespace mounts cowfs as root of a user namespace made by root
// (`unshare -Urm`, as `podman unshare` does): /dev/fuse is opened and mounted directly,
// markers fall back to user.overlay.*, and kernel overlayfs mounted in the same user
// namespace with userxattr reads that upper back as the same tree.
func TestRootlessInUserNamespace(t *testing.T) {
	requireTools(t, "unshare", "find", "sha256sum")
	userns(t, 0)
	dir, bin := rootlessDirs(t, 0)
	out := runRootless(t, dir, "unshare", "-Urm", "sh", "-c", rootlessScript, "sh", dir, bin, "umount", "kernel")
	checkRootlessUpper(t, dir)
	if strings.Contains(out, "KERNEL-SKIP") {
		t.Skipf("kernel overlayfs cannot be mounted in a user namespace here: %s", out)
	}
	compareLists(t, dir)
}

// TestRootlessAsUser mounts cowfs as an ordinary user (no namespace) through
// fusermount3, which is set-user-ID root and opens /dev/fuse itself. /dev/fuse is 0600
// on this machine (distributions ship 0666), so the test runs in a private mount
// namespace with a 0666 node bound over it. Kernel overlayfs (userxattr) then reads the
// upper back, mounted by root.
func TestRootlessAsUser(t *testing.T) {
	requireTools(t, "unshare", "setpriv", "fusermount3", "find", "sha256sum")
	if st, err := os.Stat("/usr/bin/fusermount3"); err == nil && st.Mode()&os.ModeSetuid == 0 {
		t.Skip("fusermount3 is not set-user-ID root here")
	}
	// fusermount3 wants the user's name: take nobody, whom every system has.
	nobody, err := osuser.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody to run fusermount3 as: %v", err)
	}
	uid, err := strconv.Atoi(nobody.Uid)
	if err != nil {
		t.Fatal(err)
	}
	dir, bin := rootlessDirs(t, uid)
	user := fmt.Sprintf("setpriv --reuid=%d --regid=%d --clear-groups", uid, uid)
	script := privateFuse(dir) + user + ` sh -c "$0" sh "$@"`
	runRootless(t, dir, "unshare", "-m", "sh", "-c", script, rootlessScript, dir, bin, "fusermount3 -u", "no-kernel")
	checkRootlessUpper(t, dir)
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "upper", "new"), &st); err != nil || int(st.Uid) != uid {
		t.Errorf("upper/new owned by %d (%v), want the user %d", st.Uid, err, uid)
	}
	// The kernel reads the same upper (as root, with userxattr).
	kmnt := filepath.Join(dir, "kmnt")
	opts := fmt.Sprintf("lowerdir=%s/lower,upperdir=%s/upper,workdir=%s/kwork,userxattr", dir, dir, dir)
	if err := unix.Mount("overlay", kmnt, "overlay", 0, opts); err != nil {
		t.Skipf("kernel overlayfs with userxattr: %v", err)
	}
	list := exec.Command("sh", "-c", `cd "$1" && find . -mindepth 1 -printf '%p %y %m %l\n' | LC_ALL=C sort && find . -type f -exec sha256sum {} + | LC_ALL=C sort`, "sh", kmnt)
	out, err := list.Output()
	unix.Unmount(kmnt, 0)
	if err != nil {
		t.Fatalf("listing the kernel mount: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kernel.list"), out, 0o644); err != nil {
		t.Fatal(err)
	}
	compareLists(t, dir)
}

// TestRootlessUnprivilegedUserNamespace mounts cowfs in a user namespace made by an
// ordinary user (`unshare -Urm` from uid 4242, as rootless podman does): nothing is
// set-user-ID there, so cowfs opens /dev/fuse itself (a private 0666 node, bound over
// the host's in a private mount namespace first). Kernel overlayfs mounted in the same
// namespace reads the upper back.
func TestRootlessUnprivilegedUserNamespace(t *testing.T) {
	requireTools(t, "unshare", "setpriv", "find", "sha256sum")
	userns(t, rootlessUID)
	dir, bin := rootlessDirs(t, rootlessUID)
	user := fmt.Sprintf("setpriv --reuid=%d --regid=%d --clear-groups", rootlessUID, rootlessUID)
	script := privateFuse(dir) + user + ` unshare -Urm sh -c "$0" sh "$@"`
	out := runRootless(t, dir, "unshare", "-m", "sh", "-c", script, rootlessScript, dir, bin, "umount", "kernel")
	checkRootlessUpper(t, dir)
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "upper", "new"), &st); err != nil || st.Uid != rootlessUID {
		t.Errorf("upper/new owned by %d (%v), want the user %d (root of the namespace)", st.Uid, err, rootlessUID)
	}
	if strings.Contains(out, "KERNEL-SKIP") {
		t.Skipf("kernel overlayfs cannot be mounted in this user namespace: %s", out)
	}
	compareLists(t, dir)
}
