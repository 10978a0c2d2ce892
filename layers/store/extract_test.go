package store

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cowfs/cowfs/whiteout"
	"golang.org/x/sys/unix"
)

// extractTo extracts tarball into a fresh dir (inside a parent that holds a "secret"
// file outside it, which nothing may touch) and returns the dir and the error.
func extractTo(t testing.TB, tarball []byte, opts ExtractOptions) (string, error) {
	t.Helper()
	parent := t.TempDir()
	if err := os.WriteFile(filepath.Join(parent, "secret"), []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(parent, "layer")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	err = Extract(fd, tar.NewReader(bytes.NewReader(tarball)), opts)
	// Nothing outside dir changed.
	ents, _ := os.ReadDir(parent)
	if len(ents) != 2 {
		t.Errorf("the parent of the layer holds %d entries, want 2 (secret and layer)", len(ents))
	}
	if b, _ := os.ReadFile(filepath.Join(parent, "secret")); string(b) != "keep" {
		t.Errorf("the file outside the layer reads %q", b)
	}
	return dir, err
}

var rootOpts = ExtractOptions{Format: whiteout.Format{XattrPrefix: "trusted.", CharDev: true}, Devices: true, Chown: true}

func TestExtractRefusesHostileEntries(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name    string
		entries []tent
		opts    ExtractOptions
		wantErr error
		entry   string // named in the message
	}{
		{"a path with .. is refused", []tent{reg("a/../../secret", "x")}, rootOpts, ErrEscape, "a/../../secret"},
		{"an absolute path is refused", []tent{reg("/etc/passwd", "x")}, rootOpts, ErrEscape, "/etc/passwd"},
		{"a file under a symlink to outside is refused", []tent{sym("up", ".."), reg("up/secret", "x")}, rootOpts, ErrThroughLink, "up/secret"},
		{"a file under a symlink to inside is refused too", []tent{dirE("d"), sym("s", "d"), reg("s/f", "x")}, rootOpts, ErrThroughLink, "s/f"},
		{"a directory under a symlink dir is refused", []tent{sym("up", "/"), dirE("up/tmp")}, rootOpts, ErrThroughLink, "up/tmp"},
		{"a hard link to outside is refused", []tent{hard("l", "../secret")}, rootOpts, ErrEscape, "l"},
		{"a hard link to an absolute path is refused", []tent{hard("l", "/etc/passwd")}, rootOpts, ErrEscape, "l"},
		{"a hard link to a missing target is refused", []tent{hard("l", "nothing")}, rootOpts, ErrLinkTarget, "l"},
		{"a hard link through a symlink is refused", []tent{sym("up", ".."), hard("l", "up/secret")}, rootOpts, ErrThroughLink, "l"},
		{"a hard link to a directory is refused", []tent{dirE("d"), hard("l", "d")}, rootOpts, ErrLinkTarget, "l"},
		{"a device file is refused when not allowed", []tent{chr("dev/null")}, ExtractOptions{}, ErrDevice, "dev/null"},
		{"a char 0/0 device is refused (it would be a whiteout)", []tent{chr("x")}, rootOpts, ErrCharWhiteout, "x"},
		{"a directory named like a whiteout is refused", []tent{dirE(".wh.d")}, rootOpts, ErrReserved, ".wh.d"},
		{"a path through a whiteout-named directory is refused", []tent{reg(".wh.d/f", "x")}, rootOpts, ErrReserved, ".wh.d/f"},
		{"an unknown .wh..wh. marker is refused", []tent{reg(".wh..wh.plnk", "")}, rootOpts, ErrReserved, ".wh..wh.plnk"},
		{"a whiteout of .. is refused", []tent{reg("a/.wh...", "")}, rootOpts, ErrReserved, "a/.wh..."},
		{"a file replacing a directory is refused", []tent{dirE("d"), reg("d/f", "x"), reg("d", "y")}, rootOpts, ErrReplacesDir, "d"},
		{"a file under a file is refused", []tent{reg("f", "x"), reg("f/g", "y")}, rootOpts, ErrNotDir, "f/g"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := extractTo(t, tarOf(t, tt.entries...), tt.opts)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), `"`+tt.entry+`"`) || strings.Contains(err.Error(), "\n") {
				t.Errorf("message %q does not name %q on one line", err, tt.entry)
			}
		})
	}
}

func TestExtractWritesTheOverlayFormat(t *testing.T) {
	requireRoot(t)
	userFiles := ExtractOptions{Format: whiteout.Format{XattrPrefix: "user."}}
	tests := []struct {
		name    string
		entries []tent
		opts    ExtractOptions
		want    []string
	}{
		{"a .wh. file becomes a char 0/0 whiteout", []tent{dirE("a"), wh("a", "gone")}, rootOpts,
			[]string{"a d 0755", "a/gone W"}},
		{"a .wh. file stays a .wh. file without mknod", []tent{dirE("a"), wh("a", "gone")}, userFiles,
			[]string{"a d 0755", "a/gone W"}},
		{"an opaque marker becomes the trusted opaque xattr", []tent{dirE("a"), opq("a"), reg("a/f", "x")}, rootOpts,
			[]string{"a d 0755 O", "a/f f 0644 x"}},
		{"an opaque marker becomes the user opaque xattr unprivileged", []tent{dirE("a"), opq("a")}, userFiles,
			[]string{"a d 0755 O"}},
		{"an opaque marker without xattrs stays a file", []tent{dirE("a"), opq("a")}, ExtractOptions{},
			[]string{"a O", "a d 0755"}},
		{"a whiteout then a directory of the same name is an opaque directory", []tent{wh("", "d"), dirE("d"), reg("d/f", "1")}, rootOpts,
			[]string{"d d 0755 O", "d/f f 0644 1"}},
		{"a directory then its whiteout is an opaque directory", []tent{dirE("d"), wh("", "d")}, rootOpts,
			[]string{"d d 0755 O"}},
		{"a whiteout then a file of the same name is the file", []tent{wh("", "f"), reg("f", "new")}, rootOpts,
			[]string{"f f 0644 new"}},
		{"a file then its whiteout is the file", []tent{reg("f", "new"), wh("", "f")}, rootOpts,
			[]string{"f f 0644 new"}},
		{"a later entry replaces an earlier file", []tent{reg("f", "old"), sym("f", "t")}, rootOpts,
			[]string{"f l t"}},
		{"missing parents are created", []tent{reg("a/b/c", "x")}, rootOpts,
			[]string{"a d 0755", "a/b d 0755", "a/b/c f 0644 x"}},
		{"a directory mode applies after its children", []tent{dirE("ro").withMode(0o555), reg("ro/f", "x")}, rootOpts,
			[]string{"ro d 0555", "ro/f f 0644 x"}},
		{"hard links, symlinks and fifos are kept", []tent{reg("f", "data"), hard("g", "f"), sym("s", "/abs/path"), fifoE("p")}, rootOpts,
			[]string{"f f 0644 data", "g f 0644 data", "p p 0644", "s l /abs/path"}},
		{"the root entry and ./ prefixes are accepted", []tent{dirE("./"), reg("./x", "1")}, rootOpts,
			[]string{"x f 0644 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, err := extractTo(t, tarOf(t, tt.entries...), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := treeOf(t, dir); !slices.Equal(got, tt.want) {
				t.Errorf("tree:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestExtractNeutralisesMarkerXattrs(t *testing.T) {
	requireRoot(t)
	e := dirE("d")
	e.xattr = map[string]string{"trusted.overlay.opaque": "y", "user.note": "hi"}
	dir, err := extractTo(t, tarOf(t, e, reg("d/f", "x")), rootOpts)
	if err != nil {
		t.Fatal(err)
	}
	m, err := whiteout.ReadDirMarks(openPath(t, dir), "d")
	if err != nil || m.Opaque {
		t.Errorf("a layer's own trusted.overlay.opaque made the directory opaque: %+v, %v", m, err)
	}
	buf := make([]byte, 8)
	if n, err := unix.Lgetxattr(filepath.Join(dir, "d"), "trusted.overlay.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("the attribute was not stored escaped: %q, %v", buf[:max(n, 0)], err)
	}
	// And the tar of the tree gives the user's attribute back under its own name.
	var out bytes.Buffer
	if err := WriteTar(&out, dir); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&out)
	hdr, err := tr.Next()
	if err != nil || hdr.PAXRecords[paxXattr+"trusted.overlay.opaque"] != "y" || hdr.PAXRecords[paxXattr+"user.note"] != "hi" {
		t.Errorf("first entry %+v, %v: want d/ with both attributes", hdr, err)
	}
}

func openPath(t testing.TB, dir string) int {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}
