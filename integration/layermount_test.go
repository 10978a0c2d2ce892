package integration

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// A filesystem mounted on a directory inside a lower layer stays out of the merged view:
// the directory it covers shows, as on kernel overlayfs (which works on a private copy
// of each layer's mount, without the mounts below it). cowfs does the same where it may
// (root, or a user namespace owning its mount namespace; layers.openRoot).
func TestMountInsideALowerLayerStaysOut(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs inside a layer needs root")
	}
	for _, kind := range []mountKind{kernelKind, fuseKind} {
		t.Run(string(kind), func(t *testing.T) {
			m := newTestMount(t, kind, layer{"s/under": file("covered")}, layer{})
			m.unmount()
			covered := filepath.Join(m.lowers[0], "s")
			if err := unix.Mount("tmpfs", covered, "tmpfs", 0, "mode=0755"); err != nil {
				t.Fatalf("mount a tmpfs on %s: %v", covered, err)
			}
			t.Cleanup(func() { detach(covered) })
			if err := os.WriteFile(filepath.Join(covered, "mounted"), []byte("on top"), 0o644); err != nil {
				t.Fatal(err)
			}
			m.mount()
			t.Cleanup(m.unmount) // before the tmpfs goes
			names, err := os.ReadDir(filepath.Join(m.dir, "s"))
			if err != nil {
				t.Fatal(err)
			}
			if len(names) != 1 || names[0].Name() != "under" {
				var got []string
				for _, n := range names {
					got = append(got, n.Name())
				}
				t.Errorf("s lists %v, want [under] (the covered directory's)", got)
			}
			if b, err := os.ReadFile(filepath.Join(m.dir, "s/under")); err != nil || string(b) != "covered" {
				t.Errorf("s/under: %q, %v", b, err)
			}
			if _, err := os.Lstat(filepath.Join(m.dir, "s/mounted")); !os.IsNotExist(err) {
				t.Errorf("s/mounted (on the tmpfs): %v, want ENOENT", err)
			}
			if err := os.WriteFile(filepath.Join(m.dir, "s/new"), []byte("new"), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(filepath.Join(m.upper, "s/new")); err != nil {
				t.Errorf("the new file is not in the upper: %v", err)
			}
			if _, err := os.Lstat(filepath.Join(covered, "new")); !os.IsNotExist(err) {
				t.Errorf("the new file reached the tmpfs: %v", err)
			}
		})
	}
}
