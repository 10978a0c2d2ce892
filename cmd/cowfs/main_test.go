package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// stubMountError is what fs.Mount returns while it is not written yet.
const stubMountError = "not implemented yet"

// buildTags are the Makefile's GOTAGS, which every build of cowfs uses.
const buildTags = "urfave_cli_no_docs,netgo,osusergo"

// buildCowfs builds the binary into a temporary directory, with extra go build args.
func buildCowfs(t *testing.T, args ...string) string {
	t.Helper()
	return buildCowfsEnv(t, nil, args...)
}

// buildCowfsEnv is buildCowfs with extra environment variables for go build.
func buildCowfsEnv(t *testing.T, env []string, args ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cowfs")
	cmd := exec.Command("go", append(append([]string{"build", "-tags", buildTags, "-o", bin}, args...), ".")...)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// daemonBuild is one of the two ways a background mount gets its daemon.
type daemonBuild struct {
	name string
	// env is go build's extra environment.
	env []string
	// forked: the daemon is forked before the Go runtime starts (earlyfork.c),
	// rather than the binary re-executed (daemon_linux.go).
	forked bool
}

// daemonBuilds are the default build (cgo: the fork) and one without cgo (the
// re-execution, what a build on a machine without a C compiler does).
var daemonBuilds = []daemonBuild{
	{name: "forked before the Go runtime starts", forked: true},
	{name: "re-executed when built without cgo", env: []string{"CGO_ENABLED=0"}},
}

// build builds b's binary, or skips when it needs cgo and go has none here.
func (b daemonBuild) build(t *testing.T) string {
	t.Helper()
	if b.forked {
		out, err := exec.Command("go", "env", "CGO_ENABLED").Output()
		if err != nil || strings.TrimSpace(string(out)) != "1" {
			t.Skipf("go env CGO_ENABLED is %q (%v): no C compiler here, so no fork before the runtime", strings.TrimSpace(string(out)), err)
		}
	}
	return buildCowfsEnv(t, b.env)
}

// result is what one run of the binary did.
type result struct {
	code           int
	stdout, stderr string
}

// runCowfs runs the binary with pipes for stdout and stderr, as `cowfs ... | cat`
// does: it returns only when every holder of the pipes has let go of them, and
// fails the test if that takes longer than a few seconds.
func runCowfs(t *testing.T, bin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) {
		t.Fatalf("cowfs %q returned but its output pipes stayed open", args)
	}
	code := 0
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("running cowfs %q: %v", args, err)
	}
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// testDirs makes lower (with a file "a" holding "lower\n"), upper, work and mnt.
type testDirs struct{ root, lower, upper, work, mnt string }

func newTestDirs(t *testing.T) testDirs {
	t.Helper()
	root := t.TempDir()
	d := testDirs{root, filepath.Join(root, "lower"), filepath.Join(root, "upper"),
		filepath.Join(root, "work"), filepath.Join(root, "mnt")}
	for _, dir := range []string{d.lower, d.upper, d.work, d.mnt} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(d.lower, "a"), []byte("lower\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d testDirs) opts() string {
	return "lowerdir=" + d.lower + ",upperdir=" + d.upper + ",workdir=" + d.work
}

// mounted reports the filesystem type mounted at dir, or "".
func mounted(t *testing.T, dir string) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	fstype := ""
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 9 || fields[4] != dir {
			continue
		}
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) {
				fstype = fields[i+1] // the last mount on dir is the visible one
			}
		}
	}
	return fstype
}

// unmountAtEnd makes sure nothing stays mounted at dir after the test.
func unmountAtEnd(t *testing.T, dir string) {
	t.Cleanup(func() {
		for mounted(t, dir) != "" {
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", dir, err)
				return
			}
		}
	})
}

// mountInBackground mounts d with the fuse-overlayfs form, as podman does, and
// unmounts it at the end of the test.
func mountInBackground(t *testing.T, bin string, d testDirs) {
	t.Helper()
	unmountAtEnd(t, d.mnt)
	if r := runCowfs(t, bin, "-o", d.opts(), d.mnt); r.code != 0 {
		skipIfStub(t, r)
		t.Fatalf("mount %s: exit %d: %s", d.mnt, r.code, r.stderr)
	}
}

// mountTmpfs mounts a tmpfs at dir for the test, or skips it when not root.
func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Mount("cowfs-test", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v", err)
	}
	unmountAtEnd(t, dir)
}

// skipIfStub skips the test when the filesystem cannot be mounted yet.
func skipIfStub(t *testing.T, r result) {
	t.Helper()
	if r.code != 0 && strings.Contains(r.stderr, stubMountError) {
		t.Skip("fs.Mount not implemented yet")
	}
}

func TestBadInputIsOneLineAndMountsNothing(t *testing.T) {
	for _, b := range daemonBuilds {
		t.Run(b.name, func(t *testing.T) { testBadInput(t, b.build(t)) })
	}
}

func testBadInput(t *testing.T, bin string) {
	tests := []struct {
		name string
		args func(t *testing.T, d testDirs) []string
		want string // with the test's root directory written as R
	}{
		{"a missing lowerdir option", func(_ *testing.T, d testDirs) []string {
			return []string{"-o", "upperdir=" + d.upper + ",workdir=" + d.work, d.mnt}
		}, "cowfs: no lowerdir given"},
		{"a lowerdir that does not exist", func(_ *testing.T, d testDirs) []string {
			return []string{"-o", "lowerdir=" + d.root + "/nope", d.mnt}
		}, `cowfs: lowerdir "R/nope": no such directory`},
		{"an unknown option", func(_ *testing.T, d testDirs) []string {
			return []string{"-o", d.opts() + ",foo", d.mnt}
		}, `cowfs: unknown option "foo"`},
		{"upperdir without workdir", func(_ *testing.T, d testDirs) []string {
			return []string{"-o", "lowerdir=" + d.lower + ",upperdir=" + d.upper, d.mnt}
		}, "cowfs: upperdir given without workdir"},
		{"a workdir on another filesystem", func(t *testing.T, d testDirs) []string {
			mountTmpfs(t, d.work)
			return []string{"-o", d.opts(), d.mnt}
		}, `cowfs: workdir "R/work" is not on the same filesystem as upperdir "R/upper"`},
		{"an upperdir inside a lowerdir", func(t *testing.T, d testDirs) []string {
			up := filepath.Join(d.lower, "up")
			if err := os.Mkdir(up, 0o755); err != nil {
				t.Fatal(err)
			}
			return []string{"-o", "lowerdir=" + d.lower + ",upperdir=" + up + ",workdir=" + d.work, d.mnt}
		}, `cowfs: upperdir "R/lower/up" is inside lowerdir "R/lower"`},
		{"a busy mountpoint", func(t *testing.T, d testDirs) []string {
			mountTmpfs(t, d.mnt)
			return []string{"-o", d.opts(), d.mnt}
		}, `cowfs: mountpoint "R/mnt" is busy: already mounted`},
		{"a workdir another mount is using (found by the daemon, reported by the parent)", func(t *testing.T, d testDirs) []string {
			fd, err := unix.Open(d.work, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Close(fd) })
			if err := unix.Flock(fd, unix.LOCK_EX); err != nil { // what a live mount holds
				t.Fatal(err)
			}
			return []string{"-o", d.opts(), d.mnt}
		}, `cowfs: workdir "R/work" is in use by another mount: device or resource busy`},
		{"a missing mountpoint", func(_ *testing.T, d testDirs) []string {
			return []string{"-o", d.opts(), d.root + "/nope"}
		}, `cowfs: mountpoint "R/nope": no such directory`},
		{"no arguments", func(*testing.T, testDirs) []string { return nil },
			"cowfs: no mountpoint given"},
		{"an unknown flag", func(_ *testing.T, d testDirs) []string {
			return []string{"-x", "-o", d.opts(), d.mnt}
		}, `cowfs: unknown flag "-x"`},
		{"a foreground mount with a bad option", func(_ *testing.T, d testDirs) []string {
			return []string{"-f", "-o", d.opts() + ",ro=1", d.mnt}
		}, `cowfs: option "ro" takes no value`},
		{"the mount subcommand without a lower", func(_ *testing.T, d testDirs) []string {
			return []string{"mount", "--upper", d.upper, "--work", d.work, d.mnt}
		}, "cowfs: no lowerdir given"},
		{"the mount subcommand with an unknown flag", func(_ *testing.T, d testDirs) []string {
			return []string{"mount", "--bogus", "--lower", d.lower, d.mnt}
		}, "cowfs: flag provided but not defined: -bogus"},
		{"the mount subcommand with a workdir on another filesystem", func(t *testing.T, d testDirs) []string {
			mountTmpfs(t, d.work)
			return []string{"mount", "--lower", d.lower, "--upper", d.upper, "--work", d.work, d.mnt}
		}, `cowfs: workdir "R/work" is not on the same filesystem as upperdir "R/upper"`},
		{"the mount subcommand without a mountpoint", func(_ *testing.T, d testDirs) []string {
			return []string{"mount", "--lower", d.lower}
		}, "cowfs: mount needs exactly one MOUNTPOINT argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newTestDirs(t)
			args := tt.args(t, d)
			before := mounted(t, d.mnt)
			r := runCowfs(t, bin, args...)
			if r.code != 1 {
				t.Errorf("exit code %d, want 1", r.code)
			}
			if got := strings.ReplaceAll(r.stderr, d.root, "R"); got != tt.want+"\n" {
				t.Errorf("stderr %q\n  want %q", got, tt.want+"\n")
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
			if after := mounted(t, d.mnt); after != before {
				t.Errorf("the mountpoint went from %q to %q", before, after)
			}
		})
	}
}

func TestHelpAndVersion(t *testing.T) {
	bin := buildCowfs(t)
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"--help shows both forms", []string{"--help"}, []string{"lowerdir=L1:L2", "cowfs mount --lower"}},
		{"-h is --help", []string{"-h"}, []string{"lowerdir=L1:L2"}},
		{"--help wins over other arguments", []string{"-o", "lowerdir=/l", "--help", "/m"}, []string{"lowerdir=L1:L2"}},
		{"the help subcommand shows the same", []string{"help"}, []string{"lowerdir=L1:L2"}},
		{"mount --help lists the flags by topic", []string{"mount", "--help"}, []string{"--lower DIR", "--upper DIR", "Layers", "Process"}},
		{"--version names cowfs and the FUSE library", []string{"--version"}, []string{"cowfs version dev\n", "FUSE library: go-fuse v2."}},
		{"-V is --version", []string{"-V"}, []string{"cowfs version dev\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCowfs(t, bin, tt.args...)
			if r.code != 0 || r.stderr != "" {
				t.Errorf("exit code %d, stderr %q; want 0 and nothing", r.code, r.stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, r.stdout)
				}
			}
		})
	}
}

func TestVersionIsSetWithLdflags(t *testing.T) {
	bin := buildCowfs(t, "-ldflags", "-X main.version=1.2.3")
	r := runCowfs(t, bin, "--version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "cowfs version 1.2.3\n") {
		t.Errorf("cowfs --version: exit %d, stdout %q", r.code, r.stdout)
	}
}

// TestMountFuse3ArgvParses runs cowfs the way mount.fuse3 does (SOURCE MOUNTPOINT
// -o OPTIONS, as seen with a fake program: mount -t fuse.cowfs overlay MNT -o X runs
// `cowfs overlay MNT -o X,dev,suid`), directly and through /sbin/mount.fuse3.
func TestMountFuse3ArgvParses(t *testing.T) {
	bin := buildCowfs(t)
	t.Run("directly", func(t *testing.T) {
		d := newTestDirs(t)
		unmountAtEnd(t, d.mnt)
		r := runCowfs(t, bin, "overlay", d.mnt, "-o", "rw,nosuid,nodev,relatime,"+d.opts()+",dev,suid")
		skipIfStub(t, r)
		if r.code != 0 {
			t.Fatalf("exit code %d: %s", r.code, r.stderr)
		}
		if got := mounted(t, d.mnt); !strings.HasPrefix(got, "fuse") {
			t.Errorf("mounted at %s: %q, want a fuse mount", d.mnt, got)
		}
	})
	t.Run("through mount.fuse3", func(t *testing.T) {
		helper, err := exec.LookPath("mount.fuse3")
		if err != nil {
			helper = "/sbin/mount.fuse3"
			if _, err := os.Stat(helper); err != nil {
				t.Skip("no mount.fuse3")
			}
		}
		d := newTestDirs(t)
		unmountAtEnd(t, d.mnt)
		cmd := exec.Command(helper, "overlay", d.mnt, "-t", "fuse.cowfs", "-o", d.opts()+",noatime,defaults")
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		skipIfStub(t, result{code: 1, stderr: string(out)})
		if err != nil {
			t.Fatalf("mount.fuse3: %v\n%s", err, out)
		}
		if got := mounted(t, d.mnt); !strings.HasPrefix(got, "fuse") {
			t.Errorf("mounted at %s: %q, want a fuse mount", d.mnt, got)
		}
	})
}

// daemonPid finds the cowfs daemon serving mnt by its command line.
func daemonPid(t *testing.T, bin, mnt string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")
		if args[0] == bin && args[len(args)-1] == mnt {
			return pid
		}
	}
	t.Fatalf("no cowfs daemon serving %s", mnt)
	return 0
}

// exited reports whether pid has exited (gone, or a zombie waiting for its reaper).
func exited(pid int) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	// pid (comm) state ...: comm may hold spaces, so look after the last ')'.
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] == "Z"
}

func TestDaemonizedMount(t *testing.T) {
	for _, b := range daemonBuilds {
		t.Run(b.name, func(t *testing.T) {
			bin := b.build(t)
			t.Run("the fuse-overlayfs form", func(t *testing.T) {
				testDaemonizedMount(t, bin, b.forked, func(d testDirs) []string { return []string{"-o", d.opts(), d.mnt} })
			})
			t.Run("cowfs mount", func(t *testing.T) {
				testDaemonizedMount(t, bin, b.forked, func(d testDirs) []string {
					return []string{"mount", "--lower", d.lower, "--upper", d.upper, "--work", d.work, d.mnt}
				})
			})
		})
	}
}

func testDaemonizedMount(t *testing.T, bin string, forked bool, args func(testDirs) []string) {
	d := newTestDirs(t)
	unmountAtEnd(t, d.mnt)

	// A descriptor leaked to cowfs without close-on-exec must not be kept open by the
	// daemon: whoever holds the other end would wait for ever.
	leakR, leakW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer leakR.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args(d)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr // pipes, like `cowfs ... | cat`
	cmd.ExtraFiles = []*os.File{leakW}
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err = cmd.Run()
	leakW.Close()
	if errors.Is(err, exec.ErrWaitDelay) {
		t.Fatal("cowfs returned but the daemon kept its output pipes open")
	}
	skipIfStub(t, result{code: cmd.ProcessState.ExitCode(), stderr: stderr.String()})
	if err != nil {
		t.Fatalf("cowfs: %v: %s", err, stderr.String())
	}
	t.Logf("cowfs returned after %v", time.Since(start))
	if stdout.Len() != 0 || stderr.Len() != 0 {
		t.Errorf("cowfs printed %q %q, want nothing", stdout.String(), stderr.String())
	}

	// Usable right away.
	got, err := os.ReadFile(filepath.Join(d.mnt, "a"))
	if err != nil || string(got) != "lower\n" {
		t.Fatalf("reading a lower file through the mount: %q, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(d.mnt, "b"), []byte("new\n"), 0o644); err != nil {
		t.Fatalf("writing through the mount: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(d.upper, "b")); err != nil || string(got) != "new\n" {
		t.Errorf("the new file in upper: %q, %v", got, err)
	}

	leakDone := make(chan error, 1)
	go func() {
		_, err := leakR.Read(make([]byte, 1))
		leakDone <- err
	}()
	select {
	case err := <-leakDone:
		if err == nil {
			t.Error("read data from the leaked pipe")
		}
	case <-time.After(5 * time.Second):
		t.Error("the daemon keeps a file descriptor it inherited")
	}

	pid := daemonPid(t, bin, d.mnt)
	for fd := 0; fd <= 2; fd++ {
		target, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "fd", strconv.Itoa(fd)))
		if err != nil || target != os.DevNull {
			t.Errorf("daemon fd %d is %q (%v), want %s", fd, target, err, os.DevNull)
		}
	}
	sid, err := unix.Getsid(pid)
	if err != nil || sid != pid {
		t.Errorf("daemon session %d (%v), want its own (%d)", sid, err, pid)
	}
	// A re-executed daemon finds its report pipe in its environment, which
	// /proc/PID/environ shows as it was at exec; a forked one has it from the C side.
	environ, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "environ"))
	if err != nil {
		t.Fatal(err)
	}
	if reexec := bytes.Contains(environ, []byte(daemonEnv+"=")); reexec == forked {
		t.Errorf("the daemon was re-executed: %v, want %v", reexec, !forked)
	}

	if out, err := exec.Command("fusermount3", "-u", d.mnt).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u: %v: %s", err, out)
	}
	unmounted := time.Now()
	for !exited(pid) {
		if time.Since(unmounted) > time.Second {
			t.Fatal("the daemon still runs 1 s after fusermount3 -u")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("the daemon exited %v after fusermount3 -u", time.Since(unmounted))
}

func TestDaemonErrorReachesTheParent(t *testing.T) {
	for _, b := range daemonBuilds {
		t.Run(b.name, func(t *testing.T) { testDaemonErrorReachesTheParent(t, b.build(t)) })
	}
}

func testDaemonErrorReachesTheParent(t *testing.T, bin string) {
	d := newTestDirs(t)
	// A second mount of the same upper and work dirs: Check cannot tell, the daemon
	// finds the work dir locked when it opens the layers, and the parent must say so.
	mountInBackground(t, bin, d)
	second := filepath.Join(d.root, "mnt2")
	if err := os.Mkdir(second, 0o755); err != nil {
		t.Fatal(err)
	}
	unmountAtEnd(t, second)
	r := runCowfs(t, bin, "-o", d.opts(), second)
	if r.code == 0 {
		t.Fatal("a second mount of the same work dir succeeded")
	}
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "cowfs: ") || !strings.Contains(last, "in use") {
		t.Errorf("stderr %q does not end with a cowfs: line saying the work dir is in use", r.stderr)
	}
	if r.code != 1 {
		t.Errorf("exit code %d, want 1", r.code)
	}
}

// TestContextIsAccepted mounts with containers/storage's context="..." (quotes, commas
// inside them): passed to the kernel where SELinux runs, accepted and dropped elsewhere.
func TestContextIsAccepted(t *testing.T) {
	bin := buildCowfs(t)
	d := newTestDirs(t)
	unmountAtEnd(t, d.mnt)
	r := runCowfs(t, bin, "-o", d.opts()+`,context="system_u:object_r:container_file_t:s0:c1,c2"`, d.mnt)
	skipIfStub(t, r)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if got := mounted(t, d.mnt); got != "fuse.cowfs" {
		t.Fatalf("mounted %q, want fuse.cowfs", got)
	}
	if out, err := exec.Command("fusermount3", "-u", d.mnt).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u: %v: %s", err, out)
	}
}

// startForeground starts `cowfs -f` and waits until the filesystem is mounted; the
// channel gets the result of the process's Wait.
func startForeground(t *testing.T, bin string, d testDirs) (*exec.Cmd, <-chan error) {
	t.Helper()
	unmountAtEnd(t, d.mnt)
	cmd := exec.Command(bin, "-f", "-o", d.opts(), d.mnt)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	deadline := time.Now().Add(10 * time.Second)
	for mounted(t, d.mnt) == "" {
		select {
		case err := <-exited:
			skipIfStub(t, result{code: 1, stderr: stderr.String()})
			t.Fatalf("cowfs -f exited before mounting: %v: %s", err, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("cowfs -f did not mount within 10 s")
		}
	}
	// The mount shows in /proc/mounts before the daemon has answered the kernel's INIT;
	// a stat of the root waits for that answer. (An unmount before it makes the mount
	// fail, and cowfs -f exit 1: seen once under load.)
	if _, err := os.Stat(d.mnt); err != nil {
		t.Fatalf("stat %s: %v", d.mnt, err)
	}
	return cmd, exited
}

func TestForegroundStops(t *testing.T) {
	bin := buildCowfs(t)
	tests := []struct {
		name string
		stop func(t *testing.T, cmd *exec.Cmd, mnt string)
	}{
		{"on SIGTERM it unmounts and exits 0", func(t *testing.T, cmd *exec.Cmd, _ string) {
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
		}},
		{"on SIGINT it unmounts and exits 0", func(t *testing.T, cmd *exec.Cmd, _ string) {
			if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
		}},
		{"umount from outside makes it exit 0", func(t *testing.T, _ *exec.Cmd, mnt string) {
			if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
				t.Fatalf("umount: %v: %s", err, out)
			}
		}},
		{"fusermount3 -u from outside makes it exit 0", func(t *testing.T, _ *exec.Cmd, mnt string) {
			if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
				t.Fatalf("fusermount3 -u: %v: %s", err, out)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newTestDirs(t)
			cmd, exited := startForeground(t, bin, d)
			tt.stop(t, cmd, d.mnt)
			select {
			case err := <-exited:
				if err != nil {
					t.Errorf("cowfs -f: %v, want exit 0", err)
				}
			case <-time.After(time.Second):
				t.Fatal("cowfs -f still runs 1 s later")
			}
			if got := mounted(t, d.mnt); got != "" {
				t.Errorf("still mounted: %q", got)
			}
		})
	}
}
