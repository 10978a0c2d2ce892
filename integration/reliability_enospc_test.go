package integration

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A full upper filesystem: upper and work on an 8 MiB tmpfs. Copy-ups that do not fit
// and writes past the space fail with ENOSPC, leave nothing half-copied in upper or
// work, the lower stays visible, and once space is freed the mount works again, even
// while the freed file's unlink still waits for the reaper.
func TestFullUpperENOSPC(t *testing.T) {
	sd := newScratch(t)
	upperfs := filepath.Dir(sd.upper)
	if err := unix.Mount("tmpfs", upperfs, "tmpfs", 0, "size=8m,mode=0755"); err != nil {
		t.Skipf("cannot mount a small tmpfs for the upper: %v", err)
	}
	t.Cleanup(func() { detach(upperfs) })
	for _, d := range []string{sd.upper, sd.work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pattern := func(n int, c byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = c + byte(i%23)
		}
		return b
	}
	lowerFiles := map[string][]byte{"big": pattern(16<<20, 'a'), "small": pattern(1<<20, 'b'), "mid": pattern(2<<20+1, 'c')}
	for n, b := range lowerFiles {
		if err := os.WriteFile(filepath.Join(sd.lower, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	lowerBefore := takeSnapshot(sd.lower, lowerDir)
	// The reaper holds deferred unlinks (fs/reap.go), so that the space of the file
	// removed below is still taken when the next copy-up asks for it.
	t.Setenv(strings.SplitN(reapHold, "=", 2)[0], "1")
	d := mountDaemon(t, sd.options(), sd.mnt)
	mnt := func(n string) string { return filepath.Join(sd.mnt, n) }

	// noLeftovers: the upper holds exactly want (name -> size), the work dir nothing.
	noLeftovers := func(when string, want map[string]int64) {
		t.Helper()
		names, err := readDirNames(sd.upper)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int64{}
		for _, n := range names {
			fi, err := os.Lstat(filepath.Join(sd.upper, n))
			if err != nil {
				t.Fatal(err)
			}
			got[n] = fi.Size()
		}
		if len(got) != len(want) {
			t.Errorf("%s: upper holds %v, want %v", when, got, want)
		}
		for n, size := range want {
			if got[n] != size {
				t.Errorf("%s: upper %s is %d bytes, want %d (%v)", when, n, got[n], size, got)
			}
		}
		if w, _ := readDirNames(filepath.Join(sd.work, "work")); len(w) > 0 {
			t.Errorf("%s: the work dir holds %q", when, w)
		}
	}
	lowerVisible := func(when, n string) {
		t.Helper()
		b, err := os.ReadFile(mnt(n))
		if err != nil || !bytes.Equal(b, lowerFiles[n]) {
			t.Errorf("%s: %s reads %d bytes, %v; want the lower's %d", when, n, len(b), err, len(lowerFiles[n]))
		}
	}

	// A copy-up that cannot fit.
	if f, err := os.OpenFile(mnt("big"), os.O_WRONLY, 0); !errors.Is(err, unix.ENOSPC) {
		if err == nil {
			f.Close()
		}
		t.Errorf("open big for writing (a 16 MiB copy-up into 8 MiB): %v, want ENOSPC", err)
	}
	if err := unix.Chmod(mnt("big"), 0o600); !errors.Is(err, unix.ENOSPC) {
		t.Errorf("chmod big (a copy-up): %v, want ENOSPC", err)
	}
	noLeftovers("after the failed copy-up of big", nil)
	lowerVisible("after the failed copy-up", "big")

	// Fill the disk with a new file: the writes end in ENOSPC.
	fill, err := os.Create(mnt("fill"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := pattern(256<<10, 'x')
	var wrote int64
	for wrote < 16<<20 {
		n, err := fill.Write(chunk)
		wrote += int64(n)
		if err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Errorf("filling: %v, want ENOSPC", err)
			}
			break
		}
	}
	if wrote >= 16<<20 {
		t.Errorf("wrote %d bytes on an 8 MiB upper without ENOSPC", wrote)
	}
	if err := fill.Close(); err != nil && !errors.Is(err, unix.ENOSPC) {
		t.Errorf("close fill: %v", err)
	}
	// A small copy-up on the full disk fails too, and a write into an existing copy.
	if f, err := os.OpenFile(mnt("small"), os.O_WRONLY, 0); !errors.Is(err, unix.ENOSPC) {
		if err == nil {
			f.Close()
		}
		t.Errorf("open small for writing on a full upper: %v, want ENOSPC", err)
	}
	fi, err := os.Stat(filepath.Join(sd.upper, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	noLeftovers("with the upper full", map[string]int64{"fill": fi.Size()})
	lowerVisible("with the upper full", "small")
	lowerVisible("with the upper full", "big")

	// Free the space: everything works again. The unlink of fill waits in the work dir;
	// the copy-up that finds no space has the reaper remove it, and tries again.
	if err := os.Remove(mnt("fill")); err != nil {
		t.Fatal(err)
	}
	if w, _ := readDirNames(filepath.Join(sd.work, "work")); len(w) != 1 {
		t.Errorf("the work dir holds %q after fill's removal, want fill's deferred unlink", w)
	}
	f, err := os.OpenFile(mnt("small"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("open small for writing once space is freed: %v", err)
	}
	if _, err := f.WriteAt([]byte("NEW"), 10); err != nil {
		t.Errorf("write small: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("close small: %v", err)
	}
	want := bytes.Clone(lowerFiles["small"])
	copy(want[10:], "NEW")
	if b, err := os.ReadFile(mnt("small")); err != nil || !bytes.Equal(b, want) {
		t.Errorf("small after the write: %d bytes, %v", len(b), err)
	}
	if err := os.WriteFile(mnt("new"), []byte("fits"), 0o644); err != nil {
		t.Errorf("create a file once space is freed: %v", err)
	}
	if err := unix.Chmod(mnt("mid"), 0o600); err != nil {
		t.Errorf("copy-up of mid once space is freed: %v", err)
	}
	noLeftovers("after freeing space", map[string]int64{"small": 1 << 20, "new": 4, "mid": 2<<20 + 1})
	d.stop(t)
	noLeftovers("after the unmount", map[string]int64{"small": 1 << 20, "new": 4, "mid": 2<<20 + 1})
	if diff := diffSnapshots("before", lowerBefore, "after", takeSnapshot(sd.lower, lowerDir)); diff != "" {
		t.Errorf("the lower layer changed:\n%s", diff)
	}
}
