package layers

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func newDirs(t *testing.T, names ...string) map[string]string {
	t.Helper()
	root := t.TempDir()
	m := map[string]string{}
	for _, n := range names {
		d := filepath.Join(root, n)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		m[n] = d
	}
	return m
}

func TestOpenRefusesASecondMountOfTheSameWorkdir(t *testing.T) {
	d := newDirs(t, "lower", "upper", "work")
	o := Options{Lowers: []string{d["lower"]}, Upper: d["upper"], Work: d["work"]}
	first, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(o); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("second Open of the same workdir: %v, want EBUSY", err)
	}
	first.Close()
	again, err := Open(o)
	if err != nil {
		t.Fatalf("Open after the first was closed: %v", err)
	}
	again.Close()
}

func TestOpenEmptiesWhatACrashLeftInTheWorkDir(t *testing.T) {
	d := newDirs(t, "lower", "upper", "work")
	junk := filepath.Join(d["work"], WorkSubdir, "#cowfs1", "deep")
	if err := os.MkdirAll(junk, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(junk, "half-copied"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Open(Options{Lowers: []string{d["lower"]}, Upper: d["upper"], Work: d["work"]})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	left, err := os.ReadDir(filepath.Join(d["work"], WorkSubdir))
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("work dir holds %d entries after Open, want none", len(left))
	}
}

func TestOpenOfLowersOnlyIsReadOnly(t *testing.T) {
	d := newDirs(t, "a", "b")
	s, err := Open(Options{Lowers: []string{d["a"], d["b"]}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Writable || len(s.Layers) != 2 || !s.Lower(0) {
		t.Errorf("lowers-only stack: writable=%v layers=%d lower(0)=%v", s.Writable, len(s.Layers), s.Lower(0))
	}
}
