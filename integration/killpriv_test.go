package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestSetIDBitsClearedOnWrite: a write, a truncate and an O_TRUNC open by a caller without
// CAP_FSETID clear the set-user-ID bit, and the set-group-ID bit of a group-executable
// file, as on any Linux filesystem. cowfs does it itself (FUSE_HANDLE_KILLPRIV_V2): its
// own writes, as root, would keep them. The kernel overlay is the reference.
func TestSetIDBitsClearedOnWrite(t *testing.T) {
	requireTools(t, "setpriv", "truncate")
	const uid = 4321
	lower := layer{
		"d":               dir().mode(0o777),
		"d/appended":      file("lower data").mode(0o6755).owner(uid, uid),
		"d/truncd":        file("lower data").mode(0o6755).owner(uid, uid),
		"d/trunc-on-open": file("lower data").mode(0o4755).owner(uid, uid),
		"d/sgid-no-x":     file("lower data").mode(0o2644).owner(uid, uid),
	}
	upper := layer{
		"d/upper-suid": file("upper data").mode(0o4711).owner(uid, uid),
	}
	script := `printf x >> appended && truncate -s 2 truncd && printf y > trunc-on-open && printf z >> sgid-no-x && printf w >> upper-suid`
	want := map[string]os.FileMode{
		"appended": 0o755, "truncd": 0o755, "trunc-on-open": 0o755,
		"sgid-no-x": os.ModeSetgid | 0o644, "upper-suid": 0o711,
	}
	got := map[mountKind]string{}
	for _, kind := range []mountKind{kernelKind, fuseKind} {
		t.Run(string(kind), func(t *testing.T) {
			m := newTestMount(t, kind, lower, upper)
			cmd := exec.Command("setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups", "sh", "-c", script)
			cmd.Dir = filepath.Join(m.dir, "d")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v: %s", script, err, out)
			}
			var s string
			for _, name := range []string{"appended", "truncd", "trunc-on-open", "sgid-no-x", "upper-suid"} {
				fi, err := os.Lstat(filepath.Join(m.dir, "d", name))
				if err != nil {
					t.Fatal(err)
				}
				mode := fi.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid)
				if mode != want[name] {
					t.Errorf("%s: mode %v after the write, want %v", name, mode, want[name])
				}
				s += fmt.Sprintf("%s=%v ", name, mode)
			}
			got[kind] = s
		})
	}
	if got[kernelKind] != "" && got[fuseKind] != "" && got[kernelKind] != got[fuseKind] {
		t.Errorf("kernel: %s\ncowfs:  %s", got[kernelKind], got[fuseKind])
	}
}
