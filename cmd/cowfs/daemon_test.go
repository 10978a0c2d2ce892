package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestShellCaptureOfTheMountReturns runs the mount the way scripts and podman do, with
// its output captured by the shell (`out=$(cowfs ...)`) and the capture pipe leaked to
// it once more as fd 7: the shell waits for end-of-file on that pipe, so it returns only
// if the daemon holds no end of it. Then the daemon's open files are exactly what it
// needs, and it exits soon after fusermount3 -u.
func TestShellCaptureOfTheMountReturns(t *testing.T) {
	bin := buildCowfs(t)
	d := newTestDirs(t)
	unmountAtEnd(t, d.mnt)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	script := `out=$("$0" -o "$1" "$2" 7>&1 2>&1); rc=$?; printf 'rc=%s out=%s' "$rc" "$out"`
	sh := exec.CommandContext(ctx, "sh", "-c", script, bin, d.opts(), d.mnt)
	start := time.Now()
	got, err := sh.Output()
	if ctx.Err() != nil {
		t.Fatalf("the shell's $(...) capture did not return within 20 s: the daemon holds the pipe")
	}
	if err != nil || string(got) != "rc=0 out=" {
		t.Fatalf("sh: %v, printed %q, want rc=0 and no output", err, got)
	}
	t.Logf("the shell capture returned after %v", time.Since(start))

	pid := daemonPid(t, bin, d.mnt)
	fdDir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{
		os.DevNull: true, "/dev/fuse": true, d.lower: true, d.upper: true,
		d.work: true, filepath.Join(d.work, "work"): true,
		"anon_inode:[eventpoll]": true, "anon_inode:[eventfd]": true,
	}
	// A lower layer is held as a detached copy of its mount (layers.openRoot), whose
	// fd reads as "/": it is recognized by the directory it opens.
	var lowerSt syscall.Stat_t
	if err := syscall.Stat(d.lower, &lowerSt); err != nil {
		t.Fatal(err)
	}
	isLower := func(fd string) bool {
		var st syscall.Stat_t
		return syscall.Stat(fd, &st) == nil && st.Dev == lowerSt.Dev && st.Ino == lowerSt.Ino
	}
	var seen []string
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		if err != nil {
			continue
		}
		seen = append(seen, e.Name()+"->"+target)
		// The Go runtime reads the cgroup CPU limit through files it keeps open.
		if !allowed[target] && !strings.HasPrefix(target, "/sys/fs/cgroup/") && !isLower(filepath.Join(fdDir, e.Name())) {
			t.Errorf("the daemon holds fd %s -> %s, which it does not need", e.Name(), target)
		}
	}
	t.Logf("daemon fds: %s", strings.Join(seen, " "))

	if out, err := exec.Command("fusermount3", "-u", d.mnt).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u: %v: %s", err, out)
	}
	unmounted := time.Now()
	// Not kill(pid, 0): the daemon's parent is PID 1, which reaps late; a zombie has exited.
	for !exited(pid) {
		if time.Since(unmounted) > 3*time.Second {
			t.Fatal("the daemon still runs 3 s after fusermount3 -u")
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Logf("the daemon exited %v after fusermount3 -u returned", time.Since(unmounted))
}

// TestSignalToTheWaitingCommandReachesItsDaemon stops a mount half-way: its mountpoint
// lies in another cowfs mount whose daemon is stopped (SIGSTOP), so the new daemon's
// check of the mountpoint waits in the kernel. A SIGTERM sent then to the command (the
// C parent of earlyfork.c, waiting for the report) ends it at once, as it would end
// one process, and reaches the daemon, which ends as soon as its wait is over: nothing
// gets mounted once the other daemon runs again. Only the forked build: without cgo
// the waiting parent is Go, which exits on SIGTERM and leaves its daemon (in a session
// of its own) to mount later.
func TestSignalToTheWaitingCommandReachesItsDaemon(t *testing.T) {
	bin := daemonBuilds[0].build(t)
	outer := newTestDirs(t)
	mountInBackground(t, bin, outer)
	innerMnt := filepath.Join(outer.mnt, "inner")
	if err := os.Mkdir(innerMnt, 0o755); err != nil {
		t.Fatal(err)
	}
	unmountAtEnd(t, innerMnt)
	outerPid := daemonPid(t, bin, outer.mnt)
	if err := syscall.Kill(outerPid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Cleanups run last first: the daemon runs again before anything is unmounted.
	t.Cleanup(func() { syscall.Kill(outerPid, syscall.SIGCONT) })

	inner := newTestDirs(t)
	cmd := exec.Command(bin, "-o", inner.opts(), innerMnt)
	// A file, not a pipe: Wait would wait for the daemon too, which holds it.
	errFile, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errFile.Close()
	cmd.Stderr = errFile
	stderr := func() string { b, _ := os.ReadFile(errFile.Name()); return string(b) }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// The daemon is the command's only child; the parent passes signals on from
	// right after the fork, so once the child exists a signal finds it.
	children := filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "task", strconv.Itoa(cmd.Process.Pid), "children")
	var child int
	for deadline := time.Now().Add(10 * time.Second); child == 0; {
		b, _ := os.ReadFile(children)
		if f := strings.Fields(string(b)); len(f) > 0 {
			child, _ = strconv.Atoi(f[0])
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("the command started no daemon within 10 s (stderr %q)", stderr())
		}
		time.Sleep(time.Millisecond)
	}
	t.Cleanup(func() { syscall.Kill(child, syscall.SIGKILL) })
	time.Sleep(300 * time.Millisecond) // the daemon's Go start; it then waits on the stopped mount
	select {
	case err := <-done:
		t.Fatalf("the command ended before the signal: %v: %s", err, stderr())
	default:
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the command did not end within 10 s of SIGTERM")
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("the command ended with %v, want killed by SIGTERM", cmd.ProcessState)
	}
	if got := stderr(); got != "" {
		t.Errorf("the command printed %q", got)
	}
	if err := syscall.Kill(outerPid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !exited(child); {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon (pid %d) still runs 10 s after its wait could end", child)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := mounted(t, innerMnt); got != "" {
		t.Errorf("%s got mounted (%s) after all", innerMnt, got)
	}
}

// TestMountRaisesReadahead checks the readahead a root mount sets on its FUSE
// connection (fs/passthrough.go raiseReadahead): the kernel's 128 KiB default would
// cut the sequential reads the 1 MiB max write allows into eight.
func TestMountRaisesReadahead(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only a root daemon may write /sys/class/bdi")
	}
	bin := buildCowfs(t)
	d := newTestDirs(t)
	mountInBackground(t, bin, d)
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	dev := ""
	for _, line := range strings.Split(string(info), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == d.mnt {
			dev = f[2] // major:minor, the last mount on d.mnt being the visible one
		}
	}
	if dev == "" {
		t.Fatalf("%s is not in /proc/self/mountinfo", d.mnt)
	}
	got, err := os.ReadFile(filepath.Join("/sys/class/bdi", dev, "read_ahead_kb"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(got)) != "1024" {
		t.Errorf("read_ahead_kb of the mount (bdi %s) is %s, want 1024", dev, strings.TrimSpace(string(got)))
	}
}
