package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// holder is a child process that keeps a file open or its cwd in the mount.
func holder(t *testing.T, dir string, script string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

func writeLowerFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for n, c := range files {
		p := filepath.Join(root, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// fusermount3 -u of a busy mount (an open file, a cwd inside) is refused and leaves the
// mount working; once the holders are gone it unmounts and the daemon exits 0.
func TestUnmountBusy(t *testing.T) {
	for _, c := range []struct {
		name   string
		script string
	}{
		{"a process holds a file open", "exec 3<d/f; exec sleep 600"},
		{"a process has its cwd inside", "cd d && exec sleep 600"},
	} {
		t.Run(c.name, func(t *testing.T) {
			sd := newScratch(t)
			writeLowerFiles(t, sd.lower, map[string]string{"d/f": "lower"})
			d := mountDaemon(t, sd.options(), sd.mnt)
			h := holder(t, sd.mnt, c.script)
			time.Sleep(200 * time.Millisecond) // let it open
			out, err := runFor(10*time.Second, "fusermount3", "-u", sd.mnt)
			if err == nil || !strings.Contains(string(out), "busy") {
				t.Errorf("fusermount3 -u of a busy mount: %v: %s; want it refused as busy", err, out)
			}
			if !isMountpoint(sd.mnt) || !d.alive() {
				t.Fatalf("after the refused unmount: mounted %v, daemon alive %v", isMountpoint(sd.mnt), d.alive())
			}
			if err := os.WriteFile(filepath.Join(sd.mnt, "d/g"), []byte("still works"), 0o644); err != nil {
				t.Errorf("write after the refused unmount: %v", err)
			}
			h.Process.Kill()
			h.Wait()
			d.stop(t)
			if b, err := os.ReadFile(filepath.Join(sd.upper, "d/g")); err != nil || string(b) != "still works" {
				t.Errorf("upper d/g = %q, %v", b, err)
			}
		})
	}
}

// umount -l detaches at once; open files and a cwd inside keep working; the daemon
// serves them until the last one is gone, then exits, and the writes are in the upper.
func TestUnmountLazy(t *testing.T) {
	sd := newScratch(t)
	writeLowerFiles(t, sd.lower, map[string]string{"d/f": "lower", "d/x": "x"})
	d := mountDaemon(t, sd.options(), sd.mnt)
	f, err := os.OpenFile(filepath.Join(sd.mnt, "d/f"), os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := holder(t, sd.mnt, "cd d && exec sleep 600")
	time.Sleep(200 * time.Millisecond)
	if out, err := runFor(10*time.Second, "umount", "-l", sd.mnt); err != nil {
		t.Fatalf("umount -l: %v: %s", err, out)
	}
	if isMountpoint(sd.mnt) {
		t.Fatal("still in the mount table after umount -l")
	}
	if _, err := f.WriteString(" appended"); err != nil {
		t.Errorf("write through a file open across the lazy unmount: %v", err)
	}
	cwd := fmt.Sprintf("/proc/%d/cwd", h.Process.Pid)
	names, err := readDirNames(cwd)
	if err != nil || strings.Join(names, ",") != "f,x" {
		t.Errorf("listing of the cwd kept across the lazy unmount: %q, %v", names, err)
	}
	if err := os.WriteFile(filepath.Join(cwd, "new"), []byte("n"), 0o644); err != nil {
		t.Errorf("create in the cwd kept across the lazy unmount: %v", err)
	}
	if !d.alive() {
		t.Fatal("the daemon exited while its detached mount was in use")
	}
	f.Close()
	h.Process.Kill()
	h.Wait()
	select {
	case <-d.exited:
		if d.err != nil {
			t.Errorf("daemon exit status %v", d.err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("daemon still runs 20 s after the last user of the detached mount went away")
		d.kill(t)
	}
	for n, want := range map[string]string{"d/f": "lower appended", "d/new": "n"} {
		if b, err := os.ReadFile(filepath.Join(sd.upper, n)); err != nil || string(b) != want {
			t.Errorf("upper %s = %q, %v; want %q", n, b, err, want)
		}
	}
	d = mountDaemon(t, sd.options(), sd.mnt)
	if b, err := os.ReadFile(filepath.Join(sd.mnt, "d/f")); err != nil || string(b) != "lower appended" {
		t.Errorf("after a remount d/f = %q, %v", b, err)
	}
	d.stop(t)
}

// A second mount of the same upper and work is refused with a one-line error while the
// first lives (as a daemon or in the foreground); the first keeps working.
func TestSecondMountRefused(t *testing.T) {
	sd := newScratch(t)
	writeLowerFiles(t, sd.lower, map[string]string{"f": "lower"})
	d := mountDaemon(t, sd.options(), sd.mnt)
	mnt2 := filepath.Join(sd.root, "mnt2")
	if err := os.Mkdir(mnt2, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanMount(t, mnt2) })
	for _, fg := range []bool{false, true} {
		args := []string{"-o", sd.options(), mnt2}
		if fg {
			args = append([]string{"-f"}, args...)
		}
		out, err := runFor(20*time.Second, fuseProg, args...)
		msg := strings.TrimSpace(string(out))
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || strings.Count(msg, "\n") != 0 || !strings.Contains(msg, "in use") {
			t.Errorf("second mount (foreground %v): %v: %q; want exit 1 and one line saying the workdir is in use", fg, err, msg)
		}
		if isMountpoint(mnt2) {
			t.Errorf("the second mount is mounted")
			cleanMount(t, mnt2)
		}
	}
	if err := os.WriteFile(filepath.Join(sd.mnt, "f"), []byte("first"), 0o644); err != nil {
		t.Errorf("the first mount after the refused second: %v", err)
	}
	d.stop(t)
	// Once the first is gone, the same directories mount again.
	d = mountDaemon(t, sd.options(), mnt2)
	if b, err := os.ReadFile(filepath.Join(mnt2, "f")); err != nil || string(b) != "first" {
		t.Errorf("f = %q, %v after mounting again", b, err)
	}
	d.stop(t)
}

// A daemon killed with SIGKILL (also a daemonized one, started without -f) leaves a
// mountpoint whose accesses fail (ENOTCONN, ECONNABORTED or EIO) and that fusermount3 -u cleans; the same directories
// then mount again with every change kept.
func TestDaemonKilledRestart(t *testing.T) {
	sd := newScratch(t)
	writeLowerFiles(t, sd.lower, map[string]string{"f": "lower"})
	if out, err := runFor(20*time.Second, fuseProg, "-o", sd.options(), sd.mnt); err != nil {
		t.Fatalf("cowfs: %v: %s", err, out)
	}
	if err := os.WriteFile(filepath.Join(sd.mnt, "f"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	pids := daemonPids(sd.mnt)
	if len(pids) != 1 {
		t.Fatalf("daemons for %s: %v", sd.mnt, pids)
	}
	unix.Kill(pids[0], unix.SIGKILL)
	waitGone(t, pids[0])
	// ENOTCONN, or ECONNABORTED on kernels that mark a connection whose device was
	// closed as aborted, or EIO (a cached entry that can no longer be revalidated).
	if _, err := os.Stat(filepath.Join(sd.mnt, "f")); !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.ECONNABORTED) && !errors.Is(err, syscall.EIO) {
		t.Errorf("stat in the dead mount: %v, want ENOTCONN, ECONNABORTED or EIO", err)
	}
	if out, err := runFor(10*time.Second, "fusermount3", "-u", sd.mnt); err != nil || isMountpoint(sd.mnt) {
		t.Fatalf("fusermount3 -u of the dead mount: %v: %s", err, out)
	}
	d := mountDaemon(t, sd.options(), sd.mnt)
	if b, err := os.ReadFile(filepath.Join(sd.mnt, "f")); err != nil || string(b) != "changed" {
		t.Errorf("after the restart f = %q, %v", b, err)
	}
	d.stop(t)
}
