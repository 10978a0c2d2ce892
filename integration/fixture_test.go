package integration

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A layer is a small tree described in Go: path (slash-separated, relative)
// to entry. Missing parent directories are created 0755 root:root.
type layer map[string]entry

type entryKind int

const (
	kindFile entryKind = iota
	kindDir
	kindSymlink
	kindHardlink
	kindFifo
	kindSocket
	kindCharDev
	kindWhiteout     // char 0/0 device, the kernel's whiteout
	kindWhiteoutFile // .wh.NAME next to NAME, the OCI/aufs form
	// kindWhiteoutXattr is the kernel's xattr whiteout (6.7+): an empty file
	// with trusted.overlay.whiteout in a directory whose
	// trusted.overlay.opaque is "x" (writeLayer marks the parent).
	kindWhiteoutXattr
)

// On-disk overlay markers, as the kernel (Documentation/filesystems/overlayfs.rst)
// and the OCI image spec write them.
const (
	opaqueXattr     = "trusted.overlay.opaque"
	userOpaqueXattr = "user.overlay.opaque"
	whPrefix        = ".wh."
	opaqueFileName  = ".wh..wh..opq"
)

// fixtureTime is every fixture entry's atime and mtime unless set.
var fixtureTime = time.Date(2021, 2, 3, 4, 5, 6, 0, time.UTC)

// entry is one node of a layer. Build it with file, dir, ... and the chained
// setters; the zero values mean root:root, 0644 files and 0755 dirs.
type entry struct {
	kind    entryKind
	content string
	// size and extents describe a sparse file: size bytes, data at the
	// offsets given, holes elsewhere.
	size    int64
	extents map[int64]string
	perm    uint32
	uid     int
	gid     int
	xattrs  map[string]string
	// target is a symlink's target or a hard link's path in the same layer.
	target     string
	opaque     bool // dir with trusted.overlay.opaque=y
	opaqueFile bool // dir containing .wh..wh..opq
	// opaqueAttr marks a dir opaque with this xattr set to "y"
	// (user.overlay.opaque, user.fuseoverlayfs.opaque); kernel mounts get
	// trusted.overlay.opaque instead.
	opaqueAttr string
	major      uint32
	minor      uint32
	mtime      time.Time
}

func file(content string) entry { return entry{kind: kindFile, content: content, perm: 0o644} }
func dir() entry                { return entry{kind: kindDir, perm: 0o755} }
func symlink(target string) entry {
	return entry{kind: kindSymlink, target: target, perm: 0o777}
}
func hardlink(path string) entry { return entry{kind: kindHardlink, target: path} }
func fifo() entry                { return entry{kind: kindFifo, perm: 0o644} }
func socket() entry              { return entry{kind: kindSocket, perm: 0o755} }
func chardev(major, minor uint32) entry {
	return entry{kind: kindCharDev, perm: 0o600, major: major, minor: minor}
}

// whiteout is the kernel's whiteout, a char 0/0 device.
func whiteout() entry { return entry{kind: kindWhiteout} }

// whiteoutFile is a whiteout in the .wh.NAME form. The kernel does not know
// this form, so kernel mounts get a char 0/0 whiteout instead (see writeLayer).
func whiteoutFile() entry { return entry{kind: kindWhiteoutFile} }

// whiteoutXattr is the kernel's xattr whiteout; both filesystems read this
// form, so it is written as is for both.
func whiteoutXattr() entry { return entry{kind: kindWhiteoutXattr} }

// sparse is a file of size bytes with data at the given offsets.
func sparse(size int64, extents map[int64]string) entry {
	return entry{kind: kindFile, size: size, extents: extents, perm: 0o644}
}

func (e entry) mode(perm uint32) entry { e.perm = perm; return e }
func (e entry) owner(uid, gid int) entry {
	e.uid, e.gid = uid, gid
	return e
}
func (e entry) xattr(name, value string) entry {
	m := map[string]string{}
	for k, v := range e.xattrs {
		m[k] = v
	}
	m[name] = value
	e.xattrs = m
	return e
}
func (e entry) withMtime(t time.Time) entry { e.mtime = t; return e }

// opaqueDir marks a dir opaque with the trusted.overlay.opaque xattr.
func (e entry) opaqueDir() entry { e.opaque = true; return e }

// opaqueByFile marks a dir opaque with a .wh..wh..opq file. Kernel mounts get
// the xattr instead.
func (e entry) opaqueByFile() entry { e.opaqueFile = true; return e }

// opaqueByXattr marks a dir opaque with the named xattr (user.overlay.opaque,
// user.fuseoverlayfs.opaque). Kernel mounts get trusted.overlay.opaque.
func (e entry) opaqueByXattr(name string) entry { e.opaqueAttr = name; return e }

// capability is a VFS_CAP_REVISION_2 security.capability value granting
// CAP_NET_BIND_SERVICE (bit 10), as setcap writes it.
func capability() string {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000000)
	binary.LittleEndian.PutUint32(b[4:], 1<<10)
	return string(b)
}

// orderedPaths are l's paths in the order they can be made: parents before children,
// hard links after everything they may point to.
func (l layer) orderedPaths() []string {
	paths := make([]string, 0, len(l))
	for p := range l {
		paths = append(paths, p)
	}
	sort.Slice(paths, func(i, j int) bool {
		hi, hj := l[paths[i]].kind == kindHardlink, l[paths[j]].kind == kindHardlink
		if hi != hj {
			return hj
		}
		return paths[i] < paths[j]
	})
	return paths
}

// writeLayer writes l into dir. With native set (kernel mounts) the OCI forms
// .wh.NAME and .wh..wh..opq become the kernel's char 0/0 whiteout and opaque
// xattr, so both filesystems are given the same logical layer.
func writeLayer(t testing.TB, dir string, l layer, native bool) {
	t.Helper()
	paths := l.orderedPaths()
	var touched []string
	for _, p := range paths {
		e := l[p]
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		name := full
		switch e.kind {
		case kindWhiteoutFile:
			if native {
				e.kind = kindWhiteout
			} else {
				name = filepath.Join(filepath.Dir(full), whPrefix+filepath.Base(full))
			}
		case kindDir:
			if e.opaqueFile && native {
				e.opaqueFile, e.opaque = false, true
			}
			if e.opaqueAttr != "" && native {
				e.opaqueAttr, e.opaque = "", true
			}
		}
		if err := createEntry(name, e, dir); err != nil {
			t.Fatalf("fixture %s: %v", p, err)
		}
		touched = append(touched, name)
		if e.kind == kindDir && e.opaqueFile {
			marker := filepath.Join(full, opaqueFileName)
			if err := os.WriteFile(marker, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			touched = append(touched, marker)
		}
	}
	// Fixed times last, deepest first, so that later children do not bump a
	// parent's mtime. Missing parents get the fixture time too.
	for _, p := range touched {
		for d := filepath.Dir(p); len(d) > len(dir); d = filepath.Dir(d) {
			touched = append(touched, d)
		}
	}
	sort.Slice(touched, func(i, j int) bool { return touched[i] > touched[j] })
	for _, p := range touched {
		mt := fixtureTime
		if rel, err := filepath.Rel(dir, p); err == nil {
			if e, ok := l[rel]; ok && !e.mtime.IsZero() {
				mt = e.mtime
			}
		}
		ts := []unix.Timespec{unix.NsecToTimespec(mt.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatalf("fixture times %s: %v", p, err)
		}
	}
}

func createEntry(name string, e entry, root string) error {
	var err error
	switch e.kind {
	case kindFile:
		err = writeFileData(name, e)
	case kindDir:
		err = os.Mkdir(name, 0o755)
		if os.IsExist(err) {
			err = nil
		}
	case kindSymlink:
		err = os.Symlink(e.target, name)
	case kindHardlink:
		return os.Link(filepath.Join(root, e.target), name)
	case kindFifo:
		err = unix.Mkfifo(name, 0o644)
	case kindSocket:
		err = unix.Mknod(name, unix.S_IFSOCK|0o755, 0)
	case kindCharDev:
		err = unix.Mknod(name, unix.S_IFCHR|0o600, int(unix.Mkdev(e.major, e.minor)))
	case kindWhiteout:
		return unix.Mknod(name, unix.S_IFCHR, 0)
	case kindWhiteoutFile:
		return os.WriteFile(name, nil, 0o644)
	case kindWhiteoutXattr:
		if err := os.WriteFile(name, nil, 0o644); err != nil {
			return err
		}
		if err := unix.Lsetxattr(name, "trusted.overlay.whiteout", nil, 0); err != nil {
			return err
		}
		// "x": not opaque, but holds xattr whiteouts (overlayfs.rst); an
		// opaque ("y") parent stays opaque.
		parent := filepath.Dir(name)
		if v, err := getxattr(parent, opaqueXattr); err == nil && v == "y" {
			return nil
		}
		return unix.Lsetxattr(parent, opaqueXattr, []byte("x"), 0)
	}
	if err != nil {
		return err
	}
	// Owner before mode (chown clears set-id bits) and before xattrs (chown
	// clears security.capability).
	if err := os.Lchown(name, e.uid, e.gid); err != nil {
		return err
	}
	if e.kind != kindSymlink {
		if err := unix.Chmod(name, e.perm); err != nil {
			return err
		}
	}
	for k, v := range e.xattrs {
		if err := unix.Lsetxattr(name, k, []byte(v), 0); err != nil {
			return err
		}
	}
	if e.opaque {
		if err := unix.Lsetxattr(name, opaqueXattr, []byte("y"), 0); err != nil {
			return err
		}
	}
	if e.opaqueAttr != "" {
		if err := unix.Lsetxattr(name, e.opaqueAttr, []byte("y"), 0); err != nil {
			return err
		}
	}
	return nil
}

func writeFileData(name string, e entry) error {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if e.extents == nil {
		_, err = f.WriteString(e.content)
		return err
	}
	if err := f.Truncate(e.size); err != nil {
		return err
	}
	for off, data := range e.extents {
		if _, err := f.WriteAt([]byte(data), off); err != nil {
			return err
		}
	}
	return f.Sync()
}

// join turns a fixture path into a path under root.
func join(root, p string) string {
	return filepath.Join(root, filepath.FromSlash(strings.TrimPrefix(p, "/")))
}
