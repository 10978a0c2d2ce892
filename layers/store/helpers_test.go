package store

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// tent is one entry of a test tar.
type tent struct {
	name  string
	typ   byte
	body  string
	link  string
	mode  int64
	xattr map[string]string
}

func reg(name, body string) tent     { return tent{name: name, typ: tar.TypeReg, body: body, mode: 0o644} }
func dirE(name string) tent          { return tent{name: name, typ: tar.TypeDir, mode: 0o755} }
func sym(name, to string) tent       { return tent{name: name, typ: tar.TypeSymlink, link: to, mode: 0o777} }
func hard(name, to string) tent      { return tent{name: name, typ: tar.TypeLink, link: to} }
func chr(name string) tent           { return tent{name: name, typ: tar.TypeChar, mode: 0o644} }
func fifoE(name string) tent         { return tent{name: name, typ: tar.TypeFifo, mode: 0o644} }
func wh(dir, name string) tent       { return reg(joinRel(dir, ".wh."+name), "") }
func opq(dir string) tent            { return reg(joinRel(dir, ".wh..wh..opq"), "") }
func (e tent) withMode(m int64) tent { e.mode = m; return e }

func joinRel(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// tarOf builds an uncompressed tar of entries, in order.
func tarOf(t testing.TB, entries ...tent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link,
			ModTime: time.Unix(1700000000, 0), Size: int64(len(e.body))}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		for k, v := range e.xattr {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords[paxXattr+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Size > 0 {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sha(b []byte) digest.Digest {
	s := sha256.Sum256(b)
	return digest.NewDigestFromBytes(digest.SHA256, s[:])
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: char 0/0 whiteouts, trusted xattrs, owners")
	}
}

func newStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// treeOf describes a tree as "path kind detail" lines, sorted: the form the tests
// compare. Kinds: f (content), d, l (target), c/b (major,minor), p, W (a whiteout in
// any format), O (an opaque directory marker).
func treeOf(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		perm := st.Mode & 0o7777
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			line := rel + " d " + octal(perm)
			for _, a := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
				buf := make([]byte, 8)
				if n, err := unix.Lgetxattr(p, a, buf); err == nil && string(buf[:n]) == "y" {
					line += " O"
				}
			}
			out = append(out, line)
		case unix.S_IFREG:
			if strings.HasPrefix(filepath.Base(rel), ".wh.") {
				if filepath.Base(rel) == ".wh..wh..opq" {
					out = append(out, filepath.Dir(rel)+" O")
				} else {
					out = append(out, filepath.Join(filepath.Dir(rel), strings.TrimPrefix(filepath.Base(rel), ".wh."))+" W")
				}
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out = append(out, rel+" f "+octal(perm)+" "+string(b))
		case unix.S_IFLNK:
			target, _ := os.Readlink(p)
			out = append(out, rel+" l "+target)
		case unix.S_IFCHR:
			if st.Rdev == 0 {
				out = append(out, rel+" W")
			} else {
				out = append(out, rel+" c")
			}
		case unix.S_IFIFO:
			out = append(out, rel+" p "+octal(perm))
		default:
			out = append(out, rel+" ?")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func octal(m uint32) string { return "0" + strconv.FormatUint(uint64(m), 8) }
