package integration

// A podman of the test's own: storage.conf and containers.conf in a test
// directory (CONTAINERS_STORAGE_CONF, CONTAINERS_CONF, plus --root/--runroot
// on every command), never the machine's; as root, or rootless as the test
// user inside a private mount namespace with a 0666 /dev/fuse of its own.

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cowfs/cowfs/internal/sysx"
	"golang.org/x/sys/unix"
)

// podmanTestUser is the unprivileged user the rootless podman tests run as;
// scripts/setup.sh creates it with a subordinate ID range of 65536.
const podmanTestUser = "cowfs-test"

// podmanEnv is one podman configuration in its own directory.
type podmanEnv struct {
	t            *testing.T
	dir          string
	mountProgram string
	rootless     bool
	uid, gid     int // of the user podman runs as
	fuseNode     string
	env          []string
}

// podmanTimeout bounds one podman command.
const podmanTimeout = 3 * time.Minute

// newPodmanEnv makes the directory and configuration; podman state is
// removed at cleanup (containers, images, mounts, the rootless pause process).
func newPodmanEnv(t *testing.T, mountProgram string, rootless bool) *podmanEnv {
	t.Helper()
	requireMounts(t)
	for _, c := range []string{"podman", "runc", "unshare", "setpriv"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("%s is not installed (scripts/setup.sh installs it)", c)
		}
	}
	p := &podmanEnv{t: t, mountProgram: mountProgram, rootless: rootless}
	dir, err := os.MkdirTemp("", "cowfs-podman-")
	if err != nil {
		t.Fatal(err)
	}
	p.dir = dir
	if rootless {
		u, err := user.Lookup(podmanTestUser)
		if err != nil {
			t.Skipf("no user %s for rootless podman (scripts/setup.sh creates it): %v", podmanTestUser, err)
		}
		p.uid, _ = strconv.Atoi(u.Uid)
		p.gid, _ = strconv.Atoi(u.Gid)
		for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
			b, _ := os.ReadFile(f)
			if !strings.Contains("\n"+string(b), "\n"+podmanTestUser+":") {
				t.Skipf("%s has no range for %s (scripts/setup.sh adds one)", f, podmanTestUser)
			}
		}
		if _, err := exec.LookPath("newuidmap"); err != nil {
			t.Skip("rootless podman needs newuidmap (apt-get install uidmap)")
		}
		// A private /dev/fuse that the user may open, bound over the
		// host's only inside the mount namespace of each podman command.
		p.fuseNode = filepath.Join(dir, "fuse")
		if err := unix.Mknod(p.fuseNode, unix.S_IFCHR|0o666, int(unix.Mkdev(10, 229))); err != nil {
			t.Fatalf("mknod %s: %v", p.fuseNode, err)
		}
		if err := os.Chmod(p.fuseNode, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(p.cleanup)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if rootless {
		// The test binary's directory is private to root: a copy the
		// user can run.
		if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
		p.mountProgram = filepath.Join(dir, "bin", filepath.Base(mountProgram))
		copyFile(t, mountProgram, p.mountProgram)
		if err := os.Chmod(p.mountProgram, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"home", "xdg", "graph", "run", "tmp", "volumes"} {
		full := filepath.Join(dir, d)
		if err := os.Mkdir(full, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(full, p.uid, p.gid); err != nil {
			t.Fatal(err)
		}
	}
	storage := fmt.Sprintf(`[storage]
driver = "overlay"
graphroot = "%[1]s/graph"
runroot = "%[1]s/run"
rootless_storage_path = "%[1]s/graph"

[storage.options.overlay]
mount_program = "%[2]s"
mountopt = "nodev"
`, dir, p.mountProgram)
	containers := fmt.Sprintf(`[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
netns = "none"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "%[1]s/tmp/events.log"
runtime = "runc"
tmp_dir = "%[1]s/tmp"
volume_path = "%[1]s/volumes"
`, dir)
	for name, content := range map[string]string{"storage.conf": storage, "containers.conf": containers} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p.env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + filepath.Join(dir, "home"),
		"XDG_RUNTIME_DIR=" + filepath.Join(dir, "xdg"),
		"XDG_CONFIG_HOME=" + filepath.Join(dir, "home", ".config"),
		"XDG_DATA_HOME=" + filepath.Join(dir, "home", ".local", "share"),
		"CONTAINERS_STORAGE_CONF=" + filepath.Join(dir, "storage.conf"),
		"CONTAINERS_CONF=" + filepath.Join(dir, "containers.conf"),
		"CONTAINERS_REGISTRIES_CONF=" + filepath.Join(dir, "registries.conf"),
		"TMPDIR=" + filepath.Join(dir, "tmp"),
	}
	if err := os.WriteFile(filepath.Join(dir, "registries.conf"), []byte("unqualified-search-registries = []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.checkConfig()
	return p
}

// checkConfig makes sure podman uses the test's storage, with the mount
// program, before anything is stored: never the machine's.
func (p *podmanEnv) checkConfig() {
	p.t.Helper()
	out := strings.TrimSpace(p.must("info", "--format", "{{.Store.GraphRoot}} {{.Store.RunRoot}} {{.Store.GraphDriverName}} {{json .Store.GraphOptions}}"))
	f := strings.Fields(out)
	if len(f) < 3 || f[0] != filepath.Join(p.dir, "graph") || !strings.HasPrefix(f[1], p.dir+"/") || f[2] != "overlay" ||
		!strings.Contains(out, `"Executable":"`+p.mountProgram+`"`) {
		p.t.Fatalf("podman does not use the test's storage.conf: podman info says %q", out)
	}
}

// command builds the command line of one podman call.
func (p *podmanEnv) command(ctx context.Context, args ...string) *exec.Cmd {
	// Not --root/--runroot: podman 4.3 then drops storage.conf's driver
	// options, mount_program among them (checkConfig makes sure).
	full := args
	var cmd *exec.Cmd
	if !p.rootless {
		cmd = exec.CommandContext(ctx, "podman", full...)
	} else {
		// unshare -m: the bind of the private fuse node is seen by this
		// podman and what it starts (the pause process, conmon, the
		// mount program), not by the machine.
		script := `mount --bind "$FUSE_NODE" /dev/fuse && exec setpriv --reuid="$RUN_UID" --regid="$RUN_GID" --clear-groups podman "$@"`
		cmd = exec.CommandContext(ctx, "unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", script, "sh"}, full...)...)
		cmd.Env = append(cmd.Env, "FUSE_NODE="+p.fuseNode, fmt.Sprintf("RUN_UID=%d", p.uid), fmt.Sprintf("RUN_GID=%d", p.gid))
	}
	cmd.Env = append(cmd.Env, p.env...)
	cmd.Dir = p.dir
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// try runs podman and returns stdout, stderr and the error.
func (p *podmanEnv) try(args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), podmanTimeout)
	defer cancel()
	cmd := p.command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (after %v)", ctx.Err(), podmanTimeout)
	}
	if testing.Verbose() {
		p.t.Logf("podman %s: %v in %v", shortArgs(args), err, time.Since(start).Round(time.Millisecond))
	}
	return stdout.String(), stderr.String(), err
}

// must runs podman and fails the test when it fails.
func (p *podmanEnv) must(args ...string) string {
	p.t.Helper()
	out, errOut, err := p.try(args...)
	if err != nil {
		p.t.Fatalf("podman %s: %v\nstdout:\n%s\nstderr:\n%s", shortArgs(args), err, lastLines([]byte(out), 40), lastLines([]byte(errOut), 40))
	}
	return out
}

func shortArgs(args []string) string {
	var s []string
	for _, a := range args {
		if len(a) > 60 {
			a = a[:57] + "..."
		}
		s = append(s, strings.ReplaceAll(a, "\n", " "))
	}
	return strings.Join(s, " ")
}

// cleanup removes every container and image, then the pause process of
// rootless podman, any mount left under the directory, and the directory.
func (p *podmanEnv) cleanup() {
	p.try("rm", "--all", "--force", "--time", "0")
	p.try("rmi", "--all", "--force")
	if p.rootless {
		// The pause process that holds rootless podman's namespaces: its
		// pid is in a pause.pid under the test directory.
		filepath.WalkDir(p.dir, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.Name() != "pause.pid" {
				return nil
			}
			if b, err := os.ReadFile(path); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
					unix.Kill(pid, unix.SIGKILL)
				}
			}
			return nil
		})
	}
	// Mount programs still serving a mount of this environment: a leak.
	for _, pid := range processesWith(p.mountProgram, p.dir) {
		p.t.Errorf("%s (pid %d) still runs after every container was removed; killing it", p.mountProgram, pid)
		unix.Kill(pid, unix.SIGKILL)
	}
	for _, mnt := range mountsUnder(p.dir) {
		p.t.Errorf("%s still mounted after cleanup; detaching", mnt)
		detach(mnt)
	}
	os.RemoveAll(p.dir)
}

// processesWith lists the processes running prog with an argument under dir.
func processesWith(prog, dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || exe != prog {
			continue
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(b), dir+"/") {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids
}

// mountsUnder lists this namespace's mount points under dir, deepest first.
func mountsUnder(dir string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var mnts []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 {
			if m := sysx.UnescapeMountinfo(f[4]); strings.HasPrefix(m, dir+"/") {
				mnts = append(mnts, m)
			}
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mnts)))
	return mnts
}

// layerScript is a sh script that makes l's changes in a running container
// (for a RUN step of a Containerfile): files, directories, links, modes and
// owners; a whiteout becomes rm -rf, an opaque directory rm -rf and mkdir.
func layerScript(l layer) string {
	paths := l.orderedPaths()
	var b strings.Builder
	b.WriteString("set -eu\n")
	for _, p := range paths {
		e, q := l[p], shellQuote("/"+p)
		switch e.kind {
		case kindWhiteout, kindWhiteoutFile:
			fmt.Fprintf(&b, "rm -rf %s\n", q)
			continue
		case kindDir:
			if e.opaque || e.opaqueFile || e.opaqueAttr != "" {
				fmt.Fprintf(&b, "rm -rf %s\n", q)
			}
			fmt.Fprintf(&b, "mkdir -p %s\n", q)
		case kindHardlink:
			fmt.Fprintf(&b, "ln %s %s\n", shellQuote("/"+e.target), q)
			continue
		case kindFile:
			fmt.Fprintf(&b, "mkdir -p %s\n", shellQuote(filepath.Dir("/"+p)))
			// A large file of a repeated plain unit is made by awk, not spelt out.
			if unit := e.content[:min(16, len(e.content))]; len(e.content) > 4096 && !strings.ContainsAny(unit, `"'\\%`) &&
				e.content == strings.Repeat(unit, len(e.content)/len(unit)) {
				// (Through cat: busybox awk writes every printf, 16 bytes a write.)
				fmt.Fprintf(&b, "awk 'BEGIN { for (i = 0; i < %d; i++) printf \"%%s\", \"%s\" }' | cat > %s\n", len(e.content)/len(unit), unit, q)
			} else {
				fmt.Fprintf(&b, "printf '%%s' %s > %s\n", shellQuote(e.content), q)
			}
		default:
			panic(fmt.Sprintf("layerScript: %s: kind %d not supported", p, e.kind))
		}
		fmt.Fprintf(&b, "chown %d:%d %s\nchmod %04o %s\n", e.uid, e.gid, q, e.perm, q)
	}
	return b.String()
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// runStep is a Containerfile RUN step that runs script with the image's sh.
func runStep(script string) string {
	return "RUN echo " + base64.StdEncoding.EncodeToString([]byte(script)) + " | base64 -d | sh\n"
}
