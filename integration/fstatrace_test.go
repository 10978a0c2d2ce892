package integration

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestFstatDuringRenameOver opens a name that another goroutine keeps replacing (a new
// file of another size renamed over it, as an editor or a package manager saves) and
// checks that fstat of the open file shows that file's size: the one its content says.
// A GETATTR that stats the name instead of the open file can see the file renamed over
// it since the open, and the kernel keeps those attributes for the open file.
func TestFstatDuringRenameOver(t *testing.T) {
	const rounds = 4000
	for _, kind := range []mountKind{kernelKind, fuseKind} {
		t.Run(string(kind), func(t *testing.T) {
			m := newTestMount(t, kind, layer{"d/a": file("lower")}, layer{})
			dir := filepath.Join(m.dir, "d")
			contents := [][]byte{bytes.Repeat([]byte("1"), 111), bytes.Repeat([]byte("2"), 2222)}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					tmp := filepath.Join(dir, "tmp")
					if err := os.WriteFile(tmp, contents[i%2], 0o644); err != nil {
						t.Error(err)
						return
					}
					if err := os.Rename(tmp, filepath.Join(dir, "a")); err != nil {
						t.Error(err)
						return
					}
				}
			}()
			defer func() { close(stop); wg.Wait() }()
			wrong := 0
			deadline := time.Now().Add(20 * time.Second)
			for i := 0; i < rounds && time.Now().Before(deadline); i++ {
				f, err := os.Open(filepath.Join(dir, "a"))
				if err != nil {
					t.Fatal(err)
				}
				var st unix.Stat_t
				err = unix.Fstat(int(f.Fd()), &st)
				data, rerr := io.ReadAll(f)
				f.Close()
				if err != nil || rerr != nil {
					t.Fatal(err, rerr)
				}
				if st.Size != int64(len(data)) {
					if wrong++; wrong <= 3 {
						t.Errorf("round %d: fstat of the open file shows size %d, its content is %d bytes", i, st.Size, len(data))
					}
				}
			}
			if wrong > 3 {
				t.Errorf("... %d rounds in all showed another file's size", wrong)
			}
		})
	}
}

// TestReopenThroughProc: a file that lost its last name while open is opened again
// through /proc/self/fd (programs recover deleted files that way), and shows its data and
// no links, as on the kernel, which opens the inode.
func TestReopenThroughProc(t *testing.T) {
	cases := []struct {
		name string
		drop func(dir string) error // takes the name away from d/f
	}{
		{"an unlinked file opens again through /proc/self/fd", func(dir string) error {
			return os.Remove(filepath.Join(dir, "f"))
		}},
		{"a file renamed over opens again through /proc/self/fd", func(dir string) error {
			if err := os.WriteFile(filepath.Join(dir, "new"), []byte("new"), 0o644); err != nil {
				return err
			}
			return os.Rename(filepath.Join(dir, "new"), filepath.Join(dir, "f"))
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, kind := range []mountKind{kernelKind, fuseKind} {
				t.Run(string(kind), func(t *testing.T) {
					m := newTestMount(t, kind, layer{"d/x": file("x")}, layer{})
					dir := filepath.Join(m.dir, "d")
					if err := os.WriteFile(filepath.Join(dir, "f"), []byte("old data"), 0o644); err != nil {
						t.Fatal(err)
					}
					f, err := os.Open(filepath.Join(dir, "f"))
					if err != nil {
						t.Fatal(err)
					}
					defer f.Close()
					if err := c.drop(dir); err != nil {
						t.Fatal(err)
					}
					g, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
					if err != nil {
						t.Fatalf("reopen: %v", err)
					}
					defer g.Close()
					data, err := io.ReadAll(g)
					if err != nil || string(data) != "old data" {
						t.Errorf("reopened file reads %q, %v; want %q", data, err, "old data")
					}
					var st unix.Stat_t
					if err := unix.Fstat(int(g.Fd()), &st); err != nil || st.Nlink != 0 {
						t.Errorf("reopened file: nlink %d, %v; want 0", st.Nlink, err)
					}
				})
			}
		})
	}
}
