package integration

// Shared pieces of the reliability tests (reliability_*_test.go, hostile_test.go,
// load_test.go): cowfs daemons run in the foreground as children so they can be killed,
// the clean-up of a dead daemon's mount, the worker processes (this test binary
// re-executed), and the figures the stress run prints.
//
// Every reliability test has a bounded default and a long mode set by environment
// variables (make stress sets them all): COWFS_CRASH_KILLS, COWFS_LOAD_OPS,
// COWFS_HOSTILE_ROUNDS, COWFS_MOUNTS_OPS. COWFS_STRESS_SUMMARY names a file the tests
// append their figures to.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cowfs/cowfs/internal/sysx"
	"golang.org/x/sys/unix"
)

// envCount is the integer environment variable name, or def when unset.
func envCount(t testing.TB, name string, def int) int {
	if n, ok := envInt(t, name); ok {
		return int(n)
	}
	return def
}

var summaryMu sync.Mutex

// figure logs one measured figure and appends it to $COWFS_STRESS_SUMMARY.
func figure(t testing.TB, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf(format, args...)
	t.Log(line)
	path := os.Getenv("COWFS_STRESS_SUMMARY")
	if path == "" {
		return
	}
	summaryMu.Lock()
	defer summaryMu.Unlock()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Errorf("summary: %v", err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%-44s %s\n", t.Name()+":", line)
}

// scratchDirs makes root/{lower,upperfs/upper,upperfs/work,mnt} in a fresh directory
// without commas or colons in its name, removed (after any mount is gone) at the end.
type scratchDirs struct {
	root, lower, upper, work, mnt string
}

func newScratch(t testing.TB) *scratchDirs {
	t.Helper()
	requireMounts(t)
	if buildErr != nil {
		t.Fatalf("no FUSE program to test: %v", buildErr)
	}
	root, err := os.MkdirTemp("", "cowfs-rel-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	s := &scratchDirs{root: root, lower: filepath.Join(root, "lower"),
		upper: filepath.Join(root, "upperfs", "upper"), work: filepath.Join(root, "upperfs", "work"),
		mnt: filepath.Join(root, "mnt")}
	for _, d := range []string{s.lower, s.upper, s.work, s.mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		cleanMount(t, s.mnt)
		os.RemoveAll(root)
	})
	return s
}

func (s *scratchDirs) options() string {
	return fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", s.lower, s.upper, s.work)
}

// fuseDaemon is a cowfs serving one mount in the foreground (-f), our child.
type fuseDaemon struct {
	cmd    *exec.Cmd
	mnt    string
	exited chan struct{}
	err    error // the exit status, once exited is closed
	out    *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startDaemon starts cowfs -f -o opts mnt; it does not wait for the mount.
func startDaemon(t testing.TB, opts, mnt string, extra ...string) *fuseDaemon {
	t.Helper()
	args := append(append([]string{"-f"}, extra...), "-o", opts, mnt)
	d := &fuseDaemon{cmd: exec.Command(fuseProg, args...), mnt: mnt, exited: make(chan struct{}), out: &lockedBuffer{}}
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", fuseProg, err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.exited) }()
	return d
}

// mountDaemon starts a daemon and waits until its mount is live.
func mountDaemon(t testing.TB, opts, mnt string, extra ...string) *fuseDaemon {
	t.Helper()
	d := startDaemon(t, opts, mnt, extra...)
	if err := d.waitMounted(20 * time.Second); err != nil {
		d.kill(t)
		cleanMount(t, mnt)
		t.Fatal(err)
	}
	return d
}

func (d *fuseDaemon) waitMounted(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !isMountpoint(d.mnt) {
		select {
		case <-d.exited:
			return fmt.Errorf("cowfs exited before mounting %s: %v: %s", d.mnt, d.err, strings.TrimSpace(d.out.String()))
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cowfs did not mount %s within %v: %s", d.mnt, timeout, d.out.String())
		}
	}
	return nil
}

func (d *fuseDaemon) pid() int { return d.cmd.Process.Pid }

func (d *fuseDaemon) alive() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to be reaped. It reports whether the
// daemon got stuck dying (a thread in an uninterruptible FUSE request to its own
// mount) and had to be freed by aborting its connection.
func (d *fuseDaemon) kill(t testing.TB) (stuck bool) {
	t.Helper()
	d.cmd.Process.Signal(unix.SIGKILL)
	select {
	case <-d.exited:
		return false
	case <-time.After(5 * time.Second):
	}
	t.Errorf("cowfs pid %d did not die within 5 s of SIGKILL (state %s); aborting its FUSE connection",
		d.pid(), procState(d.pid()))
	abortConnection(d.mnt)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("cowfs pid %d still not reaped after the connection abort", d.pid())
	}
	return true
}

// stop unmounts with fusermount3 -u and waits for a clean exit; it returns how long
// the daemon took to exit after the unmount.
func (d *fuseDaemon) stop(t testing.TB) time.Duration {
	t.Helper()
	if out, err := runFor(10*time.Second, "fusermount3", "-u", d.mnt); err != nil {
		t.Errorf("fusermount3 -u %s: %v: %s", d.mnt, err, out)
		cleanMount(t, d.mnt)
	}
	unmounted := time.Now()
	select {
	case <-d.exited:
		if d.err != nil {
			t.Errorf("cowfs exited with %v after fusermount3 -u: %s", d.err, d.out.String())
		}
	case <-time.After(30 * time.Second):
		// SIGQUIT: the Go runtime prints every goroutine's stack.
		d.cmd.Process.Signal(unix.SIGQUIT)
		time.Sleep(2 * time.Second)
		out := d.out.String()
		t.Errorf("cowfs still runs 30 s after fusermount3 -u (threads %s); its stacks:\n%s", procState(d.pid()), out[max(0, len(out)-20000):])
		d.kill(t)
	}
	return time.Since(unmounted)
}

func procState(pid int) string {
	var states []string
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			continue
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
			states = append(states, s[i+2:i+3])
		}
	}
	return strings.Join(states, "")
}

// runFor runs a command, killed after d.
func runFor(d time.Duration, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}

// mountDev is the st_dev (major:minor) of the mount at dir, from mountinfo, without
// touching the mount itself (a stat of a dead FUSE mount can block).
func mountDev(dir string) (major, minor uint32, ok bool) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && sysx.UnescapeMountinfo(fields[4]) == dir {
			if _, err := fmt.Sscanf(fields[2], "%d:%d", &major, &minor); err == nil {
				ok = true // the last (topmost) mount wins
			}
		}
	}
	return major, minor, ok
}

// abortConnection aborts the FUSE connection mounted at dir through
// /sys/fs/fuse/connections/N/abort (N is the minor of the mount's anonymous device):
// every request waiting on it fails, and a daemon stuck in one of its own requests can
// exit. It reports whether it wrote the abort file.
func abortConnection(dir string) bool {
	major, minor, ok := mountDev(dir)
	if !ok || major != 0 {
		return false
	}
	p := fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", minor)
	if _, err := os.Stat("/sys/fs/fuse/connections"); err != nil {
		return false
	}
	return os.WriteFile(p, []byte("1"), 0) == nil
}

// cleanMount removes whatever is mounted at dir: fusermount3 -u, and when that fails
// (the daemon is gone or stuck) an abort of the connection and a lazy detach. It never
// blocks for long.
func cleanMount(t testing.TB, dir string) {
	for i := 0; i < 20 && isMountpoint(dir); i++ {
		if _, err := runFor(5*time.Second, "fusermount3", "-u", dir); err == nil {
			continue
		}
		abortConnection(dir)
		unix.Unmount(dir, unix.MNT_DETACH)
	}
	if isMountpoint(dir) {
		t.Errorf("%s is still mounted after fusermount3 -u, an abort and a lazy detach", dir)
	}
}

// Worker processes: this test binary, re-executed with COWFS_TEST_WORKER=NAME and its
// arguments as JSON in COWFS_TEST_WORKER_ARGS (see runWorker). They write through the
// mount from outside the test process, as a container's programs would.
const (
	workerEnv     = "COWFS_TEST_WORKER"
	workerArgsEnv = "COWFS_TEST_WORKER_ARGS"
)

// workers maps a worker name to its main; it returns the exit status.
var workers = map[string]func(args json.RawMessage) int{}

// runWorker runs the worker named by $COWFS_TEST_WORKER instead of the tests.
func runWorker(name string) int {
	w, ok := workers[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown worker %q\n", name)
		return 2
	}
	return w(json.RawMessage(os.Getenv(workerArgsEnv)))
}

// workerCmd is the command that runs worker name with args.
func workerCmd(t testing.TB, name string, args any) *exec.Cmd {
	t.Helper()
	b, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), workerEnv+"="+name, workerArgsEnv+"="+string(b))
	return cmd
}

// daemonStatus is what /proc says of a daemon: open descriptors and resident memory.
func daemonStatus(pid int) (fds int, rssKiB int, err error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, 0, err
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			fmt.Sscanf(strings.TrimSpace(rest), "%d", &rssKiB)
		}
	}
	return len(ents), rssKiB, nil
}
