package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// dopKind is one family of operations the differential tester applies to
// the merged view.
type dopKind int

const (
	dCreate      dopKind = iota // open O_CREAT|O_WRONLY (|flags), write n bytes
	dOpen                       // open with flags, write n bytes at off, read back, fstat
	dWrite                      // pwrite n bytes at off without O_TRUNC
	dAppend                     // write n bytes with O_APPEND
	dTruncate                   // truncate(2) to n
	dFallocate                  // fallocate(flags, off, n)
	dRead                       // read the whole file
	dChmod                      // chmod(2) to mode
	dChown                      // lchown to uid:gid
	dUtimes                     // utimensat with flags
	dSetxattr                   // lsetxattr name = n bytes, flags
	dRemovexattr                // lremovexattr name
	dGetxattr                   // lgetxattr name
	dListxattr                  // llistxattr
	dMkdir                      // mkdir with mode
	dRmdir                      // rmdir
	dUnlink                     // unlink
	dRename                     // renameat2(path, path2, flags)
	dLink                       // link(path, path2)
	dSymlink                    // symlink(target path2, at path)
	dMkfifo                     // mkfifo with mode
	dReadlink                   // readlink
	dUnlinkOpen                 // open O_RDWR, unlink, write at off, read back, fstat, close
	dTwoFds                     // read-only fd, then write through a second fd, read the first
	dReaddir                    // readdir with path2 created (or removed) half-way, then rewind
	numDopKinds
)

var dopNames = [...]string{"dCreate", "dOpen", "dWrite", "dAppend", "dTruncate", "dFallocate", "dRead",
	"dChmod", "dChown", "dUtimes", "dSetxattr", "dRemovexattr", "dGetxattr", "dListxattr", "dMkdir",
	"dRmdir", "dUnlink", "dRename", "dLink", "dSymlink", "dMkfifo", "dReadlink", "dUnlinkOpen",
	"dTwoFds", "dReaddir"}

func (k dopKind) String() string { return dopNames[k] }

// dop is one operation of a differential sequence, as data, so that a
// sequence can be replayed, shrunk and printed as a Go test case.
type dop struct {
	kind  dopKind
	path  string
	path2 string // rename/link target, symlink target, readdir's changed name
	flags int    // open, rename, setxattr, fallocate, utimensat flags
	mode  uint32
	off   int64
	n     int64 // bytes to write, size, length
	seed  byte  // which bytes to write
	name  string
	uid   int
	gid   int
}

// fill is n deterministic bytes for a write with this seed.
func fill(n int64, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'A' + (seed+byte(i%23))%26
	}
	return b
}

// patterned is n deterministic bytes for big fixture files, so that a
// printed reproducer can say patterned(3<<20) instead of the data.
func patterned(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + (i/4096+i)%26)
	}
	return string(b)
}

// dataString shows small data as is and big data by length and hash.
func dataString(b []byte) string {
	if len(b) <= 64 {
		return fmt.Sprintf("%q", b)
	}
	h := sha256.Sum256(b)
	return fmt.Sprintf("len=%d sha256:%s", len(b), hex.EncodeToString(h[:6]))
}

// openFlags are added to every open: a fifo must not block the tester.
const openFlags = unix.O_NONBLOCK | unix.O_CLOEXEC

// diffStep applies op and then observes the whole merged tree. The
// differential runner and the reproducers it prints both go through here.
func (r *rec) diffStep(op dop) {
	r.apply(op)
	r.observe()
}

// apply runs one operation and records every errno and datum it sees.
func (r *rec) apply(op dop) {
	p := r.p(op.path)
	q := fmt.Sprintf("%q", op.path)
	switch op.kind {
	case dCreate:
		fd, err := unix.Open(p, unix.O_CREAT|unix.O_WRONLY|op.flags|openFlags, op.mode)
		r.errno("create "+q, err)
		if err == nil {
			r.fdWrite(fd, op, false)
			unix.Close(fd)
		}
	case dOpen:
		fd, err := unix.Open(p, op.flags|openFlags, op.mode)
		r.errno(fmt.Sprintf("open %s %s", q, openFlagString(op.flags)), err)
		if err != nil {
			return
		}
		acc := op.flags & unix.O_ACCMODE
		if acc != unix.O_RDONLY && op.n > 0 {
			r.fdWrite(fd, op, op.flags&unix.O_APPEND != 0)
		}
		if acc != unix.O_WRONLY {
			r.fdRead(fd, "pread")
		}
		r.fstat(fd)
		unix.Close(fd)
	case dWrite, dAppend:
		flags := unix.O_WRONLY
		if op.kind == dAppend {
			flags |= unix.O_APPEND
		}
		fd, err := unix.Open(p, flags|openFlags, 0)
		r.errno("open for "+op.kind.String()+" "+q, err)
		if err == nil {
			r.fdWrite(fd, op, op.kind == dAppend)
			unix.Close(fd)
		}
	case dTruncate:
		r.errno(fmt.Sprintf("truncate %s %d", q, op.n), unix.Truncate(p, op.n))
	case dFallocate:
		fd, err := unix.Open(p, unix.O_RDWR|openFlags, 0)
		r.errno("open for fallocate "+q, err)
		if err == nil {
			r.errno(fmt.Sprintf("fallocate %#x %d+%d", op.flags, op.off, op.n), unix.Fallocate(fd, uint32(op.flags), op.off, op.n))
			r.fstat(fd)
			unix.Close(fd)
		}
	case dRead:
		fd, err := unix.Open(p, unix.O_RDONLY|openFlags, 0)
		r.errno("open for read "+q, err)
		if err == nil {
			r.fdRead(fd, "read")
			unix.Close(fd)
		}
	case dChmod:
		r.errno(fmt.Sprintf("chmod %s %04o", q, op.mode), unix.Chmod(p, op.mode))
	case dChown:
		r.errno(fmt.Sprintf("lchown %s %d:%d", q, op.uid, op.gid), unix.Lchown(p, op.uid, op.gid))
	case dUtimes:
		ts := []unix.Timespec{{Sec: 1e9, Nsec: 5}, {Sec: 1.1e9, Nsec: 7}}
		r.errno("utimensat "+q, unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, op.flags))
	case dSetxattr:
		r.errno(fmt.Sprintf("setxattr %s %s flags=%d", q, op.name, op.flags), unix.Lsetxattr(p, op.name, fill(op.n, op.seed), op.flags))
	case dRemovexattr:
		r.errno("removexattr "+q+" "+op.name, unix.Lremovexattr(p, op.name))
	case dGetxattr:
		r.getxattr(op.path, op.name)
	case dListxattr:
		r.xattrNames(op.path)
	case dMkdir:
		r.errno(fmt.Sprintf("mkdir %s %04o", q, op.mode), unix.Mkdir(p, op.mode))
	case dRmdir:
		r.errno("rmdir "+q, unix.Rmdir(p))
	case dUnlink:
		r.errno("unlink "+q, unix.Unlink(p))
	case dRename:
		r.errno(fmt.Sprintf("rename %s %q flags=%d", q, op.path2, op.flags),
			unix.Renameat2(unix.AT_FDCWD, p, unix.AT_FDCWD, r.p(op.path2), uint(op.flags)))
	case dLink:
		r.errno(fmt.Sprintf("link %s %q", q, op.path2), unix.Link(p, r.p(op.path2)))
	case dSymlink:
		r.errno(fmt.Sprintf("symlink %s -> %q", q, op.path2), unix.Symlink(op.path2, p))
	case dMkfifo:
		r.errno(fmt.Sprintf("mkfifo %s %04o", q, op.mode), unix.Mkfifo(p, op.mode))
	case dReadlink:
		buf := make([]byte, 4096)
		n, err := unix.Readlink(p, buf)
		if err != nil {
			r.errno("readlink "+q, err)
		} else {
			r.val("readlink "+q, fmt.Sprintf("%q", buf[:n]))
		}
	case dUnlinkOpen:
		fd, err := unix.Open(p, unix.O_RDWR|openFlags, 0)
		r.errno("open for unlink "+q, err)
		if err != nil {
			return
		}
		r.errno("unlink while open "+q, unix.Unlink(p))
		r.fdWrite(fd, op, false)
		r.fdRead(fd, "pread unlinked")
		r.fstat(fd)
		unix.Close(fd)
	case dTwoFds:
		ro, err := unix.Open(p, unix.O_RDONLY|openFlags, 0)
		r.errno("open ro "+q, err)
		if err != nil {
			return
		}
		defer unix.Close(ro)
		r.fdRead(ro, "pread ro before")
		rw, err := unix.Open(p, unix.O_RDWR|openFlags, 0)
		r.errno("open rw "+q, err)
		if err != nil {
			return
		}
		r.fdWrite(rw, op, false)
		if os.Geteuid() == 0 {
			// cowfs passes lower files through as root: the read-only fd keeps reading
			// the lower copy (README, Intended differences; TestPassthroughLowerFiles).
			// A new fd must read what the kernel's old one does (TestDataPath checks the
			// old one on the other data paths).
			ro2, err := unix.Open(p, unix.O_RDONLY|openFlags, 0)
			r.errno("open ro2 "+q, err)
			if err == nil {
				r.fdRead(ro2, "pread ro2 after")
				r.fstat(ro2)
				unix.Close(ro2)
			}
		} else {
			r.fdRead(ro, "pread ro after")
			r.fstat(ro)
		}
		unix.Close(rw)
	case dReaddir:
		r.readdirChanging(op)
	default:
		r.val("unknown op", op.kind)
	}
}

// fdWrite writes op.n bytes at op.off (or appends) and records the errno.
func (r *rec) fdWrite(fd int, op dop, appending bool) {
	if op.n == 0 {
		return
	}
	data := fill(op.n, op.seed)
	var n int
	var err error
	if appending {
		n, err = unix.Write(fd, data)
	} else {
		n, err = unix.Pwrite(fd, data, op.off)
	}
	r.errno(fmt.Sprintf("write %d@%d", op.n, op.off), err)
	if err == nil && int64(n) != op.n {
		r.val("short write", n)
	}
}

// fdRead reads fd from offset 0 to EOF (at most 16 MiB) and records the data.
func (r *rec) fdRead(fd int, label string) {
	var all []byte
	buf := make([]byte, 1<<20)
	for off := int64(0); off < 16<<20; {
		n, err := unix.Pread(fd, buf, off)
		if err != nil {
			r.errno(label, err)
			return
		}
		if n == 0 {
			break
		}
		all = append(all, buf[:n]...)
		off += int64(n)
	}
	r.val(label, dataString(all))
}

// fstat records what fstat of an open file shows (not times, not st_ino).
func (r *rec) fstat(fd int) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		r.errno("fstat", err)
		return
	}
	typ := st.Mode & unix.S_IFMT
	nlink := fmt.Sprintf(" nlink=%d", st.Nlink)
	if typ == unix.S_IFDIR && avoidOpenBugs.mergedDirNlink {
		nlink = ""
	}
	r.val("fstat", fmt.Sprintf("%s %04o %d:%d%s size=%d", typeName(typ), st.Mode&0o7777, st.Uid, st.Gid, nlink, st.Size))
}

// readdirChanging reads a directory part-way, creates path2 (or removes it
// if it exists), reads on, then rewinds and reads everything again. POSIX
// leaves open whether the changed name shows before the rewind, so only the
// other names are recorded for the first pass.
func (r *rec) readdirChanging(op dop) {
	q := fmt.Sprintf("%q", op.path)
	fd, err := unix.Open(r.p(op.path), unix.O_RDONLY|unix.O_DIRECTORY|openFlags, 0)
	r.errno("opendir "+q, err)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	small := make([]byte, 100)
	n, err := unix.ReadDirent(fd, small)
	if err != nil {
		r.errno("getdents", err)
		return
	}
	_, _, names := unix.ParseDirent(small[:n], -1, nil)
	changed := r.p(op.path2)
	var st unix.Stat_t
	if unix.Lstat(changed, &st) == nil {
		r.errno("remove "+fmt.Sprintf("%q", op.path2), unix.Unlink(changed))
	} else {
		fd, err := unix.Open(changed, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|openFlags, 0o644)
		r.errno("create "+fmt.Sprintf("%q", op.path2), err)
		if err == nil {
			unix.Close(fd)
		}
	}
	readAll := func(names []string) ([]string, error) {
		big := make([]byte, 8192)
		for {
			n, err := unix.ReadDirent(fd, big)
			if err != nil || n == 0 {
				return names, err
			}
			_, _, names = unix.ParseDirent(big[:n], -1, names)
		}
	}
	names, err = readAll(names)
	r.errno("getdents rest", err)
	base := filepath.Base(op.path2)
	var kept []string
	for _, n := range names {
		if n != base {
			kept = append(kept, n)
		}
	}
	sort.Strings(kept)
	r.val("readdir during change "+q, fmt.Sprintf("%q", kept))
	if _, err := unix.Seek(fd, 0, unix.SEEK_SET); err != nil {
		r.errno("rewinddir", err)
		return
	}
	again, err := readAll(nil)
	r.errno("getdents after rewind", err)
	sort.Strings(again)
	r.val("readdir after rewind "+q, fmt.Sprintf("%q", again))
}

// observe records the merged tree in brief (types, modes, owners, nlink,
// sizes, link targets; no times, no contents) and what st_ino does: which
// paths changed their number since the last observation and which paths
// share one. Raw numbers are kept, not compared.
func (r *rec) observe() {
	type seen struct {
		path string
		ino  uint64
	}
	var lines []string
	var all []seen
	var walk func(rel string)
	walk = func(rel string) {
		full := r.p(rel)
		var st unix.Stat_t
		if err := unix.Lstat(full, &st); err != nil {
			lines = append(lines, fmt.Sprintf("%q lstat %s", rel, errnoString(err)))
			return
		}
		typ := st.Mode & unix.S_IFMT
		l := fmt.Sprintf("%q %s %04o %d:%d", rel, typeName(typ), st.Mode&0o7777, st.Uid, st.Gid)
		if typ != unix.S_IFDIR || !avoidOpenBugs.mergedDirNlink {
			l += fmt.Sprintf(" n%d", st.Nlink)
		}
		switch typ {
		case unix.S_IFREG:
			l += fmt.Sprintf(" %dB", st.Size)
		case unix.S_IFLNK:
			buf := make([]byte, 4096)
			n, _ := unix.Readlink(full, buf)
			l += fmt.Sprintf(" -> %q", buf[:max(n, 0)])
		}
		lines = append(lines, l)
		all = append(all, seen{rel, st.Ino})
		if typ != unix.S_IFDIR {
			return
		}
		names, err := readDirNames(full)
		if err != nil {
			lines = append(lines, fmt.Sprintf("%q readdir %s", rel, errnoString(err)))
			return
		}
		if d := duplicates(names); len(d) > 0 {
			lines = append(lines, fmt.Sprintf("%q DUPLICATES %q", rel, d))
		}
		for _, n := range names {
			walk(filepath.Join(rel, n))
		}
	}
	walk(".")
	r.val("tree", strings.Join(lines, "; "))

	// Stability: a path seen last time with another number. Sharing: paths
	// with one number (hard links).
	var changed []string
	byIno := map[uint64][]string{}
	now := map[string]uint64{}
	for _, s := range all {
		key := "diff ino " + s.path
		if old, ok := r.res.kept[key]; ok && old != s.ino {
			changed = append(changed, s.path)
		}
		now[key] = s.ino
		byIno[s.ino] = append(byIno[s.ino], s.path)
	}
	for k := range r.res.kept {
		if strings.HasPrefix(k, "diff ino ") {
			delete(r.res.kept, k)
		}
	}
	for k, v := range now {
		r.res.kept[k] = v
	}
	var shared []string
	for _, ps := range byIno {
		if len(ps) > 1 {
			sort.Strings(ps)
			shared = append(shared, fmt.Sprintf("%q", ps))
		}
	}
	sort.Strings(shared)
	r.val("st_ino changed", fmt.Sprintf("%q", changed))
	r.val("st_ino shared", strings.Join(shared, " "))
}

// openFlagString names the flags of an open for a result line.
func openFlagString(flags int) string {
	return flagString(flags, openFlagNames)
}

var openFlagNames = []struct {
	v    int
	name string
}{
	{unix.O_WRONLY, "unix.O_WRONLY"}, {unix.O_RDWR, "unix.O_RDWR"}, {unix.O_CREAT, "unix.O_CREAT"},
	{unix.O_EXCL, "unix.O_EXCL"}, {unix.O_TRUNC, "unix.O_TRUNC"}, {unix.O_APPEND, "unix.O_APPEND"},
	{unix.O_DIRECTORY, "unix.O_DIRECTORY"}, {unix.O_NOFOLLOW, "unix.O_NOFOLLOW"},
}

func flagString(flags int, names []struct {
	v    int
	name string
}) string {
	var parts []string
	for _, f := range names {
		if flags&f.v == f.v && f.v != 0 {
			parts = append(parts, f.name)
			flags &^= f.v
		}
	}
	if flags != 0 || len(parts) == 0 {
		parts = append(parts, fmt.Sprintf("%#x", flags))
	}
	return strings.Join(parts, "|")
}
