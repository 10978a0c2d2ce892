package store

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestDiffReadsTheUpperDir(t *testing.T) {
	requireRoot(t)
	s := newStore(t)
	bottom, err := s.ImportLayer(bytes.NewReader(tarOf(t, dirE("etc"), reg("etc/a", "1"), reg("etc/b", "2"),
		dirE("lib"), reg("lib/x", "x"), dirE("lib/sub"), reg("lib/sub/y", "y"), reg("gone-below", "g"))), ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	top, err := s.ImportLayer(bytes.NewReader(tarOf(t, wh("", "gone-below"), reg("etc/c", "3"))), ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateImage("img", []string{bottom.Digest.String(), top.Digest.String()}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		upper func(t *testing.T, u string)
		want  []string
	}{
		{"an untouched container has no changes", func(*testing.T, string) {}, nil},
		{"a new file in a lower directory is A under a C directory", func(t *testing.T, u string) {
			mkdirs(t, u, "etc")
			write(t, u, "etc/new")
		}, []string{"C /etc", "A /etc/new"}},
		{"a copied-up file is C", func(t *testing.T, u string) {
			mkdirs(t, u, "etc")
			write(t, u, "etc/c")
		}, []string{"C /etc", "C /etc/c"}},
		{"a char 0/0 whiteout is D", func(t *testing.T, u string) {
			mkdirs(t, u, "etc")
			if err := unix.Mknod(filepath.Join(u, "etc/a"), unix.S_IFCHR, 0); err != nil {
				t.Fatal(err)
			}
		}, []string{"C /etc", "D /etc/a"}},
		{"a .wh. file is D", func(t *testing.T, u string) { write(t, u, ".wh.etc") }, []string{"D /etc"}},
		{"a whiteout of what a lower whiteout already hides is no change", func(t *testing.T, u string) {
			write(t, u, ".wh.gone-below")
		}, nil},
		{"a new directory and everything below it are A", func(t *testing.T, u string) {
			mkdirs(t, u, "opt/x")
			write(t, u, "opt/x/f")
		}, []string{"A /opt", "A /opt/x", "A /opt/x/f"}},
		{"an opaque directory lists the lower children as D and its own as A", func(t *testing.T, u string) {
			mkdirs(t, u, "lib")
			if err := unix.Setxattr(filepath.Join(u, "lib"), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
				t.Fatal(err)
			}
			write(t, u, "lib/new")
			mkdirs(t, u, "lib/sub")
		}, []string{"C /lib", "A /lib/new", "A /lib/sub", "D /lib/x"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := "c" + string(rune('a'+i))
			c, err := s.CreateContainer("img", name)
			if err != nil {
				t.Fatal(err)
			}
			tt.upper(t, s.UpperDir(c))
			changes, err := s.Diff(name)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ch := range changes {
				got = append(got, ch.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("diff:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func mkdirs(t *testing.T, root, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, root, p string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(root, p), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
}
