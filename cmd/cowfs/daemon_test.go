package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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
	var seen []string
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		if err != nil {
			continue
		}
		seen = append(seen, e.Name()+"->"+target)
		// The Go runtime reads the cgroup CPU limit through files it keeps open.
		if !allowed[target] && !strings.HasPrefix(target, "/sys/fs/cgroup/") {
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
