package copyup_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cowfs/cowfs/copyup"
	"github.com/cowfs/cowfs/layers"
	"golang.org/x/sys/unix"
)

// upperOnRamfs moves the upper layer and the work dir of e onto a fresh ramfs, which
// supports no xattrs at all (layers.Open would refuse it as a work dir, so the fds are
// swapped after opening; they are put back before the stack closes).
func upperOnRamfs(t *testing.T, e *env) {
	t.Helper()
	mnt := t.TempDir()
	if err := unix.Mount("ramfs", mnt, "ramfs", 0, "mode=0755"); err != nil {
		t.Skipf("cannot mount a ramfs to stand for an upper without xattrs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	e.upper, e.work = filepath.Join(mnt, "upper"), filepath.Join(mnt, "work")
	must(t, os.Mkdir(e.upper, 0o755))
	must(t, os.Mkdir(e.work, 0o700))
	up, err := unix.Open(e.upper, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	must(t, err)
	work, err := unix.Open(e.work, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	must(t, err)
	oldUp, oldWork := e.stack.Layers[layers.Upper].Root, e.stack.Work
	e.stack.Layers[layers.Upper].Root, e.stack.Work = up, work
	t.Cleanup(func() {
		e.stack.Layers[layers.Upper].Root, e.stack.Work = oldUp, oldWork
		unix.Close(up)
		unix.Close(work)
	})
}

// An xattr the upper cannot hold must fail the copy-up cleanly (or be skipped), never
// crash the daemon: a panic kills every container using the mount.
func TestFileXattrUnsupportedByUpper(t *testing.T) {
	tests := []struct {
		name string
		attr string
	}{
		{"a one-letter user attribute name", "user.a"},
		{"a seven-byte user attribute name", "user.ab"},
		{"a long user attribute name", "user.mime_type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			src := filepath.Join(e.lower, "f")
			must(t, os.WriteFile(src, []byte("data"), 0o644))
			must(t, unix.Lsetxattr(src, tt.attr, []byte("v"), 0))
			upperOnRamfs(t, e)
			err := func() (err error) {
				defer func() {
					if r := recover(); r != nil {
						err = fmt.Errorf("panic: %v", r)
						t.Errorf("File panicked on %s: %v", tt.attr, r)
					}
				}()
				return e.c.File(copyup.Source{Layer: lowerLayer, Rel: "f"})
			}()
			t.Logf("File: %v", err)
			if err != nil {
				assertAbsent(t, filepath.Join(e.upper, "f"))
			} else if b, rerr := os.ReadFile(filepath.Join(e.upper, "f")); rerr != nil || string(b) != "data" {
				t.Errorf("File succeeded but upper f reads %q, %v", b, rerr)
			}
			assertEmptyDir(t, e.work)
		})
	}
}
