package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// snapshot maps a path (relative, "." for the root) to a one-line description.
// Trees are compared as snapshots so that a difference prints as
// "path: kernel=..., cowfs=...".
type snapshot map[string]string

// snapshotKind says what a snapshot describes and therefore what it records.
type snapshotKind int

const (
	// mergedView: what a user of the mount sees. Not times (copy-up and
	// whiteouts legitimately touch them), not inode numbers (cowfs and the
	// kernel number differently), not directory sizes (fs-specific).
	mergedView snapshotKind = iota
	// upperDir: the upper layer on disk. Whiteouts and opaque markers are
	// normalised ("whiteout", "opaque") whatever their form; of the
	// xattrs only the user-visible ones count.
	upperDir
	// lowerDir: everything, times and inode numbers included; lowers must not
	// change at all.
	lowerDir
)

func takeSnapshot(root string, kind snapshotKind) snapshot {
	s := snapshot{}
	walkSnapshot(s, root, ".", kind)
	return s
}

func walkSnapshot(s snapshot, root, rel string, kind snapshotKind) {
	full := filepath.Join(root, rel)
	var st unix.Stat_t
	if err := unix.Lstat(full, &st); err != nil {
		s[rel] = "lstat: " + errnoString(err)
		return
	}
	desc, isDir := describe(full, &st, kind)
	if kind == upperDir && rel != "." {
		base := filepath.Base(rel)
		switch {
		case base == opaqueFileName:
			return // folded into the parent's "opaque", whatever its type
		case isWhiteoutStat(&st):
			desc = "whiteout"
		case strings.HasPrefix(base, whPrefix):
			rel = filepath.Join(filepath.Dir(rel), strings.TrimPrefix(base, whPrefix))
			desc = "whiteout"
		}
	}
	if !isDir {
		s[rel] = desc
		return
	}
	names, err := readDirNames(full)
	if err != nil {
		s[rel] = desc + " readdir: " + errnoString(err)
		return
	}
	if dups := duplicates(names); len(dups) > 0 {
		desc += fmt.Sprintf(" DUPLICATE-ENTRIES%v", dups)
	}
	if kind == upperDir && isOpaqueDir(full, names) {
		desc += " opaque"
	}
	s[rel] = desc
	for _, n := range names {
		walkSnapshot(s, root, filepath.Join(rel, n), kind)
	}
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	sort.Strings(names)
	return names, err
}

func duplicates(sorted []string) []string {
	var d []string
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			d = append(d, sorted[i])
		}
	}
	return d
}

func isWhiteoutStat(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// isMetacopyFile reports whether an upper file carries the metacopy marker (its data is
// still below), in either namespace.
func isMetacopyFile(path string) bool {
	for _, x := range []string{"trusted.overlay.metacopy", "user.overlay.metacopy"} {
		if _, err := getxattr(path, x); err == nil {
			return true
		}
	}
	return false
}

func isOpaqueDir(dir string, names []string) bool {
	for _, x := range []string{opaqueXattr, userOpaqueXattr} {
		if v, err := getxattr(dir, x); err == nil && v == "y" {
			return true
		}
	}
	for _, n := range names {
		if n == opaqueFileName {
			return true
		}
	}
	return false
}

// describe formats one inode; it reports whether it is a directory.
func describe(path string, st *unix.Stat_t, kind snapshotKind) (string, bool) {
	var b strings.Builder
	typ := st.Mode & unix.S_IFMT
	fmt.Fprintf(&b, "%s %04o %d:%d", typeName(typ), st.Mode&0o7777, st.Uid, st.Gid)
	fmt.Fprintf(&b, " nlink=%d", st.Nlink)
	switch typ {
	case unix.S_IFREG:
		fmt.Fprintf(&b, " size=%d %s data=%s", st.Size, hashFile(path), dataMap(path))
		if kind == upperDir && isMetacopyFile(path) {
			b.WriteString(" metacopy")
		}
	case unix.S_IFLNK:
		target, err := os.Readlink(path)
		if err != nil {
			target = "readlink: " + errnoString(err)
		}
		fmt.Fprintf(&b, " -> %q", target)
	case unix.S_IFCHR, unix.S_IFBLK:
		fmt.Fprintf(&b, " rdev=%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	if xs := xattrString(path, kind); xs != "" {
		b.WriteString(" xattrs{" + xs + "}")
	}
	if kind == lowerDir {
		fmt.Fprintf(&b, " ino=%d mtime=%d.%09d ctime=%d.%09d", st.Ino,
			st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
	}
	return b.String(), typ == unix.S_IFDIR
}

func typeName(typ uint32) string {
	switch typ {
	case unix.S_IFREG:
		return "file"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "chardev"
	case unix.S_IFBLK:
		return "blockdev"
	}
	return fmt.Sprintf("type%o", typ)
}

func hashFile(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "open: " + errnoString(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "read: " + errnoString(err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))[:12]
}

// holeGranularity is the resolution at which data maps are compared. Kernel
// overlayfs copies up in 1 MiB chunks and skips only whole-chunk holes
// (OVL_COPY_UP_CHUNK_SIZE), while cowfs keeps every hole the lower file has, so
// both are compared at the kernel's granularity.
const holeGranularity = 1 << 20

// dataMap lists the data extents of a file by SEEK_DATA/SEEK_HOLE, rounded out
// to holeGranularity ("[0,1048576)[16777216,17825792)"); "-" when the file has no data.
func dataMap(path string) string {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return "open:" + errnoString(err)
	}
	defer unix.Close(fd)
	var parts []string
	var starts, ends []int64
	var off int64
	for {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break
		}
		if err != nil {
			return "seek:" + errnoString(err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return "seek:" + errnoString(err)
		}
		start, end := data&^(holeGranularity-1), (hole+holeGranularity-1)&^(holeGranularity-1)
		if n := len(ends); n > 0 && ends[n-1] >= start {
			ends[n-1] = end // touches the previous extent once rounded
		} else {
			starts, ends = append(starts, start), append(ends, end)
		}
		off = hole
	}
	for i := range starts {
		parts = append(parts, fmt.Sprintf("[%d,%d)", starts[i], ends[i]))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "")
}

// xattrString lists the xattrs a snapshot compares: user-visible ones
// (user.*, security.capability) everywhere; on lowers all of them. The
// overlay markers (trusted.overlay.*, user.overlay.*) and the daemons'
// private ones (trusted.cowfs.*, user.fuseoverlayfs.*) are folded or ignored
// in the upper dir; in the merged view they must not show up at all, so they
// are kept there.
func xattrString(path string, kind snapshotKind) string {
	names, err := listxattr(path)
	if err != nil {
		return "listxattr: " + errnoString(err)
	}
	var kept []string
	for _, n := range names {
		if kind == upperDir && !userVisibleXattr(n) {
			continue
		}
		if kind == mergedView && !userVisibleXattr(n) && !strings.Contains(n, "overlay") && !strings.Contains(n, "cowfs") {
			continue
		}
		v, err := getxattr(path, n)
		if err != nil {
			v = "getxattr: " + errnoString(err)
		}
		kept = append(kept, fmt.Sprintf("%s=%q", n, v))
	}
	sort.Strings(kept)
	return strings.Join(kept, ",")
}

func userVisibleXattr(name string) bool {
	if name == "security.capability" {
		return true
	}
	return strings.HasPrefix(name, "user.") && !strings.HasPrefix(name, "user.overlay.") &&
		!strings.HasPrefix(name, "user.fuseoverlayfs.") && !strings.HasPrefix(name, "user.cowfs.")
}

func listxattr(path string) ([]string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(path, buf)
	if err != nil {
		if err == unix.ENOTSUP {
			return nil, nil
		}
		return nil, err
	}
	var names []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	sort.Strings(names)
	return names, nil
}

func getxattr(path, name string) (string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Lgetxattr(path, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// diffSnapshots prints "path: kernel=..., cowfs=..." for every difference;
// empty when equal.
func diffSnapshots(aName string, a snapshot, bName string, b snapshot) string {
	paths := map[string]bool{}
	for p := range a {
		paths[p] = true
	}
	for p := range b {
		paths[p] = true
	}
	sorted := make([]string, 0, len(paths))
	for p := range paths {
		sorted = append(sorted, p)
	}
	sort.Strings(sorted)
	var out strings.Builder
	for _, p := range sorted {
		av, aok := a[p]
		bv, bok := b[p]
		if aok && bok && av == bv {
			continue
		}
		if !aok {
			av = "(absent)"
		}
		if !bok {
			bv = "(absent)"
		}
		fmt.Fprintf(&out, "  %s:\n    %s=%s\n    %s=%s\n", p, aName, av, bName, bv)
	}
	return out.String()
}

func (s snapshot) String() string {
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s: %s\n", k, s[k])
	}
	return b.String()
}
