package store

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A metacopy file (from a metacopy=on mount) has no data of its own: a layer written
// from that upper would hold zeros, so WriteTar refuses it, naming the file.
func TestWriteTarRefusesMetacopyFiles(t *testing.T) {
	for _, attr := range []string{"trusted.overlay.metacopy", "user.overlay.metacopy"} {
		t.Run(attr, func(t *testing.T) {
			if strings.HasPrefix(attr, "trusted.") && os.Geteuid() != 0 {
				t.Skip("needs root to set trusted.* xattrs")
			}
			dir := t.TempDir()
			p := filepath.Join(dir, "sub", "f")
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(p, 100); err != nil {
				t.Fatal(err)
			}
			if err := WriteTar(io.Discard, dir); err != nil {
				t.Fatalf("WriteTar of a plain file: %v", err)
			}
			if err := unix.Lsetxattr(p, attr, nil, 0); err != nil {
				t.Skipf("cannot set %s here: %v", attr, err)
			}
			err := WriteTar(io.Discard, dir)
			if err == nil || !strings.Contains(err.Error(), "sub/f") || !strings.Contains(err.Error(), "metacopy") {
				t.Errorf("WriteTar = %v, want an error naming sub/f as a metacopy file", err)
			}
		})
	}
}
