package integration

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// asUser runs a command as uid/gid 1000 and records how it ended, mapping
// the message coreutils prints to the errno name.
func (r *rec) asUser(label string, args ...string) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err == nil {
		r.val(label, "ok "+strings.TrimSpace(string(out)))
		return
	}
	msg := string(out)
	for text, name := range map[string]string{"Permission denied": "EACCES", "Operation not permitted": "EPERM", "No such file": "ENOENT"} {
		if strings.Contains(msg, text) {
			r.val(label, name)
			return
		}
	}
	r.val(label, "failed: "+strings.TrimSpace(msg))
}

func TestPermissions(t *testing.T) {
	runCases(t, []behaviourCase{
		{
			name:   "a file created by a non-root caller is owned by that caller",
			lowers: []layer{{"pub": dir().mode(0o777), "pub/lower": file("l").mode(0o666)}},
			op: ops(func(r *rec) {
				r.asUser("touch pub/mine", "touch", r.p("pub/mine"))
				r.asUser("mkdir pub/mydir", "mkdir", r.p("pub/mydir"))
				r.asUser("append to pub/lower", "sh", "-c", "echo more >> "+r.p("pub/lower"))
				r.stat("pub/mine")
				r.stat("pub/mydir")
				r.stat("pub/lower")
				r.read("pub/lower")
			}),
			want: []string{"touch pub/mine: ok "},
		},
		{
			name:   "a non-root caller cannot read a 0600 root file or write a read-only directory",
			lowers: []layer{{"secret": file("s").mode(0o600), "ro": dir().mode(0o755), "open": file("o").mode(0o644)}},
			op: ops(func(r *rec) {
				r.asUser("cat secret", "cat", r.p("secret"))
				r.asUser("cat open", "cat", r.p("open"))
				r.asUser("touch ro/x", "touch", r.p("ro/x"))
				r.asUser("rm open", "rm", "-f", r.p("open"))
				r.asUser("chmod open", "chmod", "777", r.p("open"))
				r.errno("root still reads secret", func() error { _, err := os.ReadFile(r.p("secret")); return err }())
			}),
			want: []string{"cat secret: EACCES", "cat open: ok o"},
		},
		{
			name:   "root can chown and chmod lower files owned by others",
			lowers: []layer{{"f": file("f").owner(1000, 1000).mode(0o600)}},
			op: ops(func(r *rec) {
				r.errno("chown f 0:0", unix.Chown(r.p("f"), 0, 0))
				r.errno("chmod f 0444", unix.Chmod(r.p("f"), 0o444))
				r.stat("f")
			}),
		},
	})
}
