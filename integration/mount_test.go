package integration

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cowfs/cowfs/internal/sysx"
	"golang.org/x/sys/unix"
)

// mountKind says which filesystem a testMount is.
type mountKind string

const (
	kernelKind mountKind = "kernel" // kernel overlayfs
	fuseKind   mountKind = "cowfs"  // the FUSE program: cowfs or $COWFS_TEST_PROG
)

// kernelOptions pins the kernel features cowfs does not implement, so that
// the kernel's upper directory is comparable.
const kernelOptions = "redirect_dir=off,index=off,metacopy=off"

// daemonLog runs FUSE daemons in the foreground with -d, their traffic in a file that
// a failing test prints (COWFS_TEST_DAEMON_LOG=1; it slows long runs down).
var daemonLog = os.Getenv("COWFS_TEST_DAEMON_LOG") != ""

// testMount is one live overlay mount over fresh layer directories.
type testMount struct {
	t      testing.TB
	kind   mountKind
	root   string   // holds every directory below; removed by release
	dir    string   // the merged view
	lowers []string // topmost first
	upper  string
	work   string
	// logPath is the daemon's debug log (with COWFS_TEST_DAEMON_LOG or mountOpts.log).
	logPath string
	// log runs the daemon in the foreground with its traffic in logPath.
	log bool
	// extra are more -o options for the FUSE program; env its extra environment;
	// kernelOpts the kernel's feature options (kernelOptions unless set).
	extra      string
	env        []string
	kernelOpts string
	// daemon is the foreground daemon started under -v, nil otherwise;
	// exited receives its exit status.
	daemon  *exec.Cmd
	exited  chan error
	mounted bool
}

// mountOpts are per-mount choices of the harness.
type mountOpts struct {
	// tmpfsLayers puts every layer (and upper+work) on its own fresh tmpfs,
	// so that inode numbers collide between layers.
	tmpfsLayers bool
	// extra are more -o options for the FUSE program (not for the kernel).
	extra string
	// env is added to the FUSE program's environment (not for the kernel).
	env []string
	// kernel replaces kernelOptions for the kernel mount (e.g. metacopy=on, which the
	// kernel takes only with redirect_dir=on).
	kernel string
	// log keeps the daemon's FUSE traffic in testMount.logPath, for a test that reads
	// it (as COWFS_TEST_DAEMON_LOG does for every mount).
	log bool
}

// newTestMount writes the layers (lowers topmost first, then the upper as the
// last argument) into fresh directories and mounts them as kind. The mount is
// undone in t.Cleanup, also when the test fails.
func newTestMount(t testing.TB, kind mountKind, layers ...layer) *testMount {
	return newTestMountOpts(t, kind, mountOpts{}, layers...)
}

func newTestMountOpts(t testing.TB, kind mountKind, o mountOpts, layers ...layer) *testMount {
	t.Helper()
	requireMounts(t)
	if len(layers) < 2 {
		t.Fatalf("newTestMount needs at least one lower and the upper, got %d layers", len(layers))
	}
	if kind == fuseKind && buildErr != nil {
		t.Fatalf("no FUSE program to test: %v", buildErr)
	}
	// Not t.TempDir: its name comes from the test name, and a comma or colon
	// in a layer path would break the mount options.
	root, err := os.MkdirTemp("", "cowfs-case-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	// MkdirTemp makes 0700; callers other than root must reach the mount.
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	m := &testMount{t: t, kind: kind, root: root, dir: filepath.Join(root, "mnt"), extra: o.extra, env: o.env, kernelOpts: o.kernel, log: o.log}
	if m.kernelOpts == "" {
		m.kernelOpts = kernelOptions
	}
	mkdir := func(name string) string {
		d := filepath.Join(root, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if o.tmpfsLayers {
			if err := unix.Mount("tmpfs", d, "tmpfs", 0, "mode=0755"); err != nil {
				t.Fatalf("tmpfs %s: %v", d, err)
			}
			t.Cleanup(func() { detach(d) })
		}
		return d
	}
	lowers, upper := layers[:len(layers)-1], layers[len(layers)-1]
	for i, l := range lowers {
		d := mkdir(fmt.Sprintf("lower%d", i))
		writeLayer(t, d, l, kind == kernelKind)
		m.lowers = append(m.lowers, d)
	}
	ud := mkdir("upperfs")
	m.upper, m.work = filepath.Join(ud, "upper"), filepath.Join(ud, "work")
	for _, d := range []string{m.upper, m.work, m.dir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeLayer(t, m.upper, upper, kind == kernelKind)
	if err := os.Chmod(m.upper, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.cleanup)
	m.mount()
	return m
}

func (m *testMount) optionString() string {
	return fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(m.lowers, ":"), m.upper, m.work)
}

func (m *testMount) mount() {
	m.t.Helper()
	if m.kind == kernelKind {
		if err := unix.Mount("overlay", m.dir, "overlay", 0, m.optionString()+","+m.kernelOpts); err != nil {
			m.t.Fatalf("mount overlay: %v", err)
		}
		m.mounted = true
		return
	}
	args := []string{"-o", m.optionString(), m.dir}
	if m.extra != "" {
		args = append([]string{"-o", m.extra}, args...)
	}
	if daemonLog || m.log {
		// Foreground with the FUSE traffic in a file we print on failure.
		m.logPath = filepath.Join(filepath.Dir(m.dir), fmt.Sprintf("daemon-%d.log", time.Now().UnixNano()))
		logf, err := os.Create(m.logPath)
		if err != nil {
			m.t.Fatal(err)
		}
		defer logf.Close()
		m.daemon = exec.Command(fuseProg, append([]string{"-d"}, args...)...)
		m.daemon.Stdout, m.daemon.Stderr = logf, logf
		m.daemon.Env = append(os.Environ(), m.env...)
		if err := m.daemon.Start(); err != nil {
			m.t.Fatalf("start %s: %v", fuseProg, err)
		}
		exited := make(chan error, 1)
		m.exited = exited
		daemon := m.daemon
		go func() { exited <- daemon.Wait() }()
		deadline := time.Now().Add(10 * time.Second)
		for !isMountpoint(m.dir) {
			select {
			case err := <-exited:
				m.daemon = nil
				m.t.Fatalf("%s -d %s exited before mounting: %v\n%s", fuseProg, strings.Join(args, " "), err, readLog(m.logPath))
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				m.t.Fatalf("%s did not mount within 10s\n%s", fuseProg, readLog(m.logPath))
			}
		}
		m.mounted = true
		return
	}
	cmd := exec.Command(fuseProg, args...)
	cmd.Env = append(os.Environ(), m.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		m.t.Fatalf("%s %s: %v\n%s", fuseProg, strings.Join(args, " "), err, out)
	}
	if !isMountpoint(m.dir) {
		m.t.Fatalf("%s returned but %s is not mounted\n%s", fuseProg, m.dir, out)
	}
	m.mounted = true
}

// unmount unmounts and waits for a daemon to go away; safe to call twice.
func (m *testMount) unmount() {
	m.t.Helper()
	if !m.mounted {
		return
	}
	m.mounted = false
	pids := daemonPids(m.dir)
	// EBUSY can be transient: a parallel test's fork holds copies of our
	// descriptors until it execs.
	var err error
	for i := 0; i < 50; i++ {
		if m.kind == kernelKind {
			err = unix.Unmount(m.dir, 0)
		} else if out, ferr := exec.Command("fusermount3", "-u", m.dir).CombinedOutput(); ferr != nil {
			err = fmt.Errorf("fusermount3 -u: %v: %s", ferr, strings.TrimSpace(string(out)))
		} else {
			err = nil
		}
		if err == nil || !isMountpoint(m.dir) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		m.t.Errorf("unmount %s: %v; detaching", m.dir, err)
		detach(m.dir)
	}
	if m.kind == kernelKind {
		return
	}
	if m.daemon != nil {
		// The foreground daemon must exit on its own once unmounted.
		select {
		case <-m.exited:
		case <-time.After(10 * time.Second):
			m.t.Errorf("daemon pid %d still running 10s after unmount; killing it", m.daemon.Process.Pid)
			m.daemon.Process.Kill()
			<-m.exited
		}
		m.daemon = nil
		return
	}
	for _, pid := range pids {
		waitGone(m.t, pid)
	}
}

// remount unmounts and mounts the same directories again.
func (m *testMount) remount() {
	m.t.Helper()
	m.unmount()
	m.mount()
}

// release unmounts and removes the layer directories now rather than at the
// end of the test, for tests that mount many times (the differential tester).
func (m *testMount) release() {
	m.t.Helper()
	m.unmount()
	os.RemoveAll(m.root)
}

func (m *testMount) cleanup() {
	if m.mounted {
		m.unmount()
	}
	if m.t.Failed() && m.logPath != "" {
		m.t.Logf("daemon log %s:\n%s", m.logPath, readLog(m.logPath))
	}
}

func detach(dir string) {
	for i := 0; i < 50 && isMountpoint(dir); i++ {
		if unix.Unmount(dir, unix.MNT_DETACH) != nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func isMountpoint(dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && sysx.UnescapeMountinfo(fields[4]) == dir {
			return true
		}
	}
	return false
}

// daemonPids finds the daemonized FUSE program serving dir by its command
// line (it is our child's child, so we have no handle on it).
func daemonPids(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if len(args) > 1 && args[len(args)-1] == dir {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitGone waits for a daemon we started to exit after unmount, and kills it
// (by pid) if it does not.
func waitGone(t testing.TB, pid int) {
	for i := 0; i < 500; i++ {
		if unix.Kill(pid, 0) != nil {
			return
		}
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && strings.Contains(string(st), ") Z ") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	if holder, dev, ok := heldElsewhere(pid); ok {
		// Not cowfs's doing: the mount lives on in another mount namespace.
		t.Logf("daemon pid %d still serves its mount, held by the mount namespace of pid %d; aborting connection %s", pid, holder, dev)
		abortHeldConnection(dev)
		unix.Kill(pid, unix.SIGKILL)
		return
	}
	t.Errorf("daemon pid %d still running 5s after unmount; killing it; threads:%s", pid, describeProc(pid))
	unix.Kill(pid, unix.SIGKILL)
}

func readLog(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > 64<<10 {
		b = append([]byte("...\n"), b[len(b)-64<<10:]...)
	}
	return string(b)
}
