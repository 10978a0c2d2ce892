package integration

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// unionmountScript is shared/tools/run-unionmount.sh beside the clone (X/main, X/shared),
// relative to this package's directory.
var unionmountScript = filepath.Join("..", "..", "shared", "tools", "run-unionmount.sh")

var (
	unionmountTotal = regexp.MustCompile(`(?m)^(\d+) passed, (\d+) failed$`)
	unionmountFail  = regexp.MustCompile(`(?m)^FAIL (\S+) .*$`)
)

// TestUnionmountSuite runs amir73il/unionmount-testsuite against the cowfs binary through
// run-unionmount.sh in its default mode (--xdev, as fuse-overlayfs's CI runs it). The
// suite checkout cannot be downloaded in CI: the test skips when it is absent.
func TestUnionmountSuite(t *testing.T) {
	requireMounts(t)
	if testing.Short() {
		t.Skip("-short: the unionmount suite takes about 40 s")
	}
	script, err := filepath.Abs(unionmountScript)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(script); err != nil {
		t.Skipf("no unionmount runner at %s (shared/ beside the clone): %v", script, err)
	}
	suites := os.Getenv("COWFS_SUITES_DIR")
	if suites == "" {
		suites = "/work/suites"
	}
	if _, err := os.Stat(filepath.Join(suites, "unionmount-testsuite", "run")); err != nil {
		t.Skipf("no unionmount-testsuite checkout under %s (set COWFS_SUITES_DIR; it cannot be fetched in CI): %v", suites, err)
	}
	for _, tool := range []string{"unshare", "python3", "bc", "mount.fuse3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the runner needs %s: %v", tool, err)
		}
	}
	if buildErr != nil {
		t.Fatalf("no FUSE program to test: %v", buildErr)
	}
	// The runner bind-mounts its adapter over /usr/local/sbin: keep the program elsewhere.
	prog := filepath.Join(t.TempDir(), filepath.Base(fuseProg))
	if err := copyExecutable(fuseProg, prog); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	args := []string{"--xdev", prog}
	// COWFS_UNIONMOUNT_TESTS narrows the run to some of the suite's tests (space-separated).
	args = append(args, strings.Fields(os.Getenv("COWFS_UNIONMOUNT_TESTS"))...)
	cmd := exec.CommandContext(ctx, script, args...)
	cmd.Env = append(os.Environ(), "SUITES_DIR="+suites)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	runErr := cmd.Run()
	t.Logf("%s %s: %v after %s", script, strings.Join(args, " "), runErr, time.Since(start).Round(time.Second))
	if testing.Verbose() {
		t.Logf("output:\n%s", out.String())
	}

	m := unionmountTotal.FindAllStringSubmatch(out.String(), -1)
	if len(m) == 0 {
		t.Fatalf("no final \"N passed, M failed\" line (%v); output:\n%s", runErr, out.String())
	}
	last := m[len(m)-1]
	passed, _ := strconv.Atoi(last[1])
	failed, _ := strconv.Atoi(last[2])
	if failed > 0 {
		var names []string
		for _, f := range unionmountFail.FindAllStringSubmatch(out.String(), -1) {
			names = append(names, f[1])
		}
		t.Errorf("unionmount-testsuite: %d passed, %d failed: %s\n%s", passed, failed, strings.Join(names, " "), out.String())
	}
	if passed == 0 {
		t.Errorf("unionmount-testsuite ran no test; output:\n%s", out.String())
	}
	if runErr != nil && failed == 0 {
		t.Errorf("the runner failed (%v) although no test did; output:\n%s", runErr, out.String())
	}
}

func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
