// Package integration runs the same behaviour cases on kernel overlayfs and on
// the cowfs FUSE daemon, and compares what the caller sees (errno by errno),
// the merged tree and the upper directory. See runner_test.go for the case
// type, mount_test.go for newTestMount and fixture_test.go for layers.
package integration

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The environment the suite needs, decided once in TestMain.
var (
	// skipReason is non-empty when this machine cannot mount at all (not root,
	// no /dev/fuse); every test skips with it.
	skipReason string
	// fuseProg is the FUSE program under test: the freshly built cowfs, or
	// $COWFS_TEST_PROG (e.g. fuse-overlayfs, to prove the harness).
	fuseProg string
	// buildErr is set when cowfs did not build; the kernel side still runs.
	buildErr error
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if name := os.Getenv(workerEnv); name != "" {
		return runWorker(name)
	}
	switch {
	case os.Geteuid() != 0:
		skipReason = "the suite mounts overlayfs and FUSE filesystems and must run as root"
	default:
		if _, err := os.Stat("/dev/fuse"); err != nil {
			skipReason = fmt.Sprintf("/dev/fuse is missing: %v", err)
		}
	}
	if skipReason != "" {
		return m.Run()
	}
	defer removeRaceBinary()
	if prog := os.Getenv("COWFS_TEST_PROG"); prog != "" {
		p, err := exec.LookPath(prog)
		if err != nil {
			buildErr = fmt.Errorf("COWFS_TEST_PROG=%s: %w", prog, err)
		}
		fuseProg = p
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "cowfs-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	fuseProg = filepath.Join(dir, "cowfs")
	build := exec.Command("go", "build", "-tags", "urfave_cli_no_docs,netgo,osusergo", "-o", fuseProg, "./cmd/cowfs") // tags: see the Makefile
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		buildErr = fmt.Errorf("go build ./cmd/cowfs: %v\n%s", err, strings.TrimSpace(string(out)))
	}
	return m.Run()
}

// requireMounts skips t when this machine cannot mount.
func requireMounts(t testing.TB) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}
