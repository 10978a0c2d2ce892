package integration

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Option strings and layer paths with commas, colons, quotes, spaces, backslashes and
// newlines, through the real binary: each is either mounted with the right layers (the
// lower's file reads back its directory's name) or refused with exit status 1 and one
// line, and never hangs or leaves a mount behind.
func TestOptionStrings(t *testing.T) {
	sd := newScratch(t)
	type outcome int
	const (
		mounts outcome = iota
		refused
	)
	cases := []struct {
		name  string
		dir   string // the lower directory's name
		lower string // how it is written in lowerdir= ("" : the plain path)
		upper string // a name for the upper and work dirs' parent
		via   string // "-o" (fuse-overlayfs's syntax) or "mount" (cowfs mount --lower)
		want  outcome
	}{
		{"a comma escaped with a backslash", "a,b", `a\,b`, "u1", "-o", mounts},
		{"a comma unescaped splits the option", "c,d", `c,d`, "u2", "-o", refused},
		{"a colon escaped with a backslash", "e:f", `e\:f`, "u3", "-o", mounts},
		{"a colon unescaped is a second lower that does not exist", "g:h", `g:h`, "u4", "-o", refused},
		{"a space", "i j", "", "u5", "-o", mounts},
		{"a double quote inside a name", `k"l`, `k\"l`, "u6", "-o", mounts},
		{"a quoted value keeps its comma", "m,n", `"@/m,n"`, "u7", "-o", mounts},
		{"a backslash escaped", `o\p`, `o\\p`, "u8", "-o", mounts},
		{"a newline", "q\nr", "", "u9", "-o", mounts},
		{"a comma in the upper dir's path", "s", "", "u,10", "-o", mounts},
		{"a comma through cowfs mount --lower", "t,u", "", "u11", "mount", mounts},
		{"a colon through cowfs mount --lower separates layers", "v:w", "", "u12", "mount", refused},
		{"an escaped colon through cowfs mount --lower", "x:y", `x\:y`, "u13", "mount", mounts},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := filepath.Join(sd.root, "c"+c.upper)
			lower := filepath.Join(base, c.dir)
			upperParent := filepath.Join(base, c.upper)
			upper, work, mnt := filepath.Join(upperParent, "upper"), filepath.Join(upperParent, "work"), filepath.Join(base, "mnt")
			for _, d := range []string{lower, upper, work, mnt} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(lower, "f"), []byte(c.dir), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cleanMount(t, mnt) })
			var args []string
			if c.via == "mount" {
				l := lower
				if c.lower != "" {
					l = filepath.Join(base, c.lower)
				}
				args = []string{"mount", "--lower", l, "--upper", upper, "--work", work, mnt}
			} else {
				esc := strings.NewReplacer(`\`, `\\`, `,`, `\,`, `:`, `\:`)
				l := esc.Replace(lower)
				if c.lower != "" {
					l = filepath.Join(base, c.lower)
					if strings.HasPrefix(c.lower, `"@`) {
						l = `"` + filepath.Join(base, strings.Trim(c.lower, `"@`)) + `"`
					}
				}
				opts := "lowerdir=" + l + ",upperdir=" + esc.Replace(upper) + ",workdir=" + esc.Replace(work)
				args = []string{"-o", opts, mnt}
			}
			out, err := runFor(30*time.Second, fuseProg, args...)
			msg := strings.TrimSpace(string(out))
			var ee *exec.ExitError
			switch {
			case err == nil:
				b, rerr := os.ReadFile(filepath.Join(mnt, "f"))
				if rerr != nil || string(b) != c.dir {
					t.Errorf("mounted, but f reads %q, %v; want %q", b, rerr, c.dir)
				}
				if c.want != mounts {
					t.Errorf("mounted; want it refused")
				}
				if o, err := runFor(10*time.Second, "fusermount3", "-u", mnt); err != nil {
					t.Errorf("fusermount3 -u: %v: %s", err, o)
				}
				t.Logf("mounted: %q", args)
			case errors.As(err, &ee) && ee.ExitCode() == 1:
				if strings.Count(msg, "\n") != 0 || msg == "" {
					t.Errorf("refused with %d lines, want one: %q", strings.Count(msg, "\n")+1, msg)
				}
				if c.want != refused {
					t.Errorf("refused (%q); want it mounted", msg)
				}
				t.Logf("refused: %s", msg)
			default:
				t.Errorf("%v: %q; want exit 0 or 1", err, msg)
			}
			if isMountpoint(mnt) && c.want == refused {
				t.Errorf("refused but mounted")
			}
		})
	}
}
