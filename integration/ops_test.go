package integration

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestOperations(t *testing.T) {
	const ten = "0123456789"
	base := layer{"a": file("lower a"), "b": file("lower b"), "d/x": file("x"), "d/y": file("y")}
	runCases(t, []behaviourCase{
		{
			name:   "create, write, read back and O_EXCL on a lower name",
			lowers: []layer{base},
			op: ops(func(r *rec) {
				fd, err := unix.Open(r.p("new"), unix.O_CREAT|unix.O_EXCL|unix.O_RDWR, 0o640)
				r.errno("create new", err)
				if err == nil {
					_, err = unix.Pwrite(fd, []byte("hello"), 0)
					r.errno("pwrite", err)
					r.errno("fsync", unix.Fsync(fd))
					unix.Close(fd)
				}
				_, err = unix.Open(r.p("a"), unix.O_CREAT|unix.O_EXCL|unix.O_RDWR, 0o640)
				r.errno("O_EXCL on lower a", err)
				r.read("new")
				r.stat("new")
			}),
			want: []string{"O_EXCL on lower a: EEXIST"},
		},
		{
			name:   "an O_TMPFILE file made in a lower directory, written and linked into place",
			lowers: []layer{base},
			op: ops(func(r *rec) {
				fd, err := unix.Open(r.p("d"), unix.O_TMPFILE|unix.O_RDWR, 0o640)
				r.errno("open d O_TMPFILE", err)
				if err != nil {
					return
				}
				defer unix.Close(fd)
				_, err = unix.Pwrite(fd, []byte("made unnamed"), 0)
				r.errno("pwrite", err)
				r.fstat(fd)
				proc := fmt.Sprintf("/proc/self/fd/%d", fd)
				r.errno("link it as d/new", unix.Linkat(unix.AT_FDCWD, proc, unix.AT_FDCWD, r.p("d/new"), unix.AT_SYMLINK_FOLLOW))
				r.errno("link it again as d/x", unix.Linkat(unix.AT_FDCWD, proc, unix.AT_FDCWD, r.p("d/x"), unix.AT_SYMLINK_FOLLOW))
				_, err = unix.Pwrite(fd, []byte("!"), 12)
				r.errno("pwrite after the link", err)
				r.read("d/new")
				r.stat("d/new")
				r.fstat(fd)
			}),
			want: []string{"link it again as d/x: EEXIST"},
		},
		{
			name:   "an O_TMPFILE file closed without a name leaves nothing",
			lowers: []layer{base},
			op: ops(func(r *rec) {
				fd, err := unix.Open(r.p("d"), unix.O_TMPFILE|unix.O_WRONLY, 0o600)
				r.errno("open d O_TMPFILE", err)
				if err == nil {
					_, err = unix.Write(fd, []byte("gone"))
					r.errno("write", err)
					unix.Close(fd)
				}
				names, err := os.ReadDir(r.p("d"))
				r.errno("readdir d", err)
				for _, e := range names {
					r.val("d holds", e.Name())
				}
			}),
		},
		{
			name:   "open with O_TRUNC on a lower file empties the copy",
			lowers: []layer{base},
			op: ops(func(r *rec) {
				fd, err := unix.Open(r.p("a"), unix.O_WRONLY|unix.O_TRUNC, 0)
				r.errno("open a O_TRUNC", err)
				if err == nil {
					unix.Close(fd)
				}
				r.stat("a")
			}),
		},
		{
			name:   "ftruncate grows a lower file with zeros",
			lowers: []layer{{"f": file(ten)}},
			op: ops(func(r *rec) {
				f, err := os.OpenFile(r.p("f"), os.O_RDWR, 0)
				r.errno("open f", err)
				if err == nil {
					r.errno("ftruncate 16", f.Truncate(16))
					f.Close()
				}
				r.read("f")
			}),
		},
		{
			name:   "fallocate and punching a hole in a lower file",
			lowers: []layer{{"f": file(string(make([]byte, 3*4096)) + ten)}},
			op: ops(func(r *rec) {
				fd, err := unix.Open(r.p("f"), unix.O_RDWR, 0)
				r.errno("open f", err)
				if err != nil {
					return
				}
				defer unix.Close(fd)
				r.errno("fallocate 0..64k", unix.Fallocate(fd, 0, 0, 64<<10))
				r.errno("fallocate keep size", unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 64<<10, 4096))
				r.errno("punch hole", unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 4096, 4096))
				var st unix.Stat_t
				r.errno("fstat", unix.Fstat(fd, &st))
				r.val("size", st.Size)
				r.val("data map", dataMap(r.p("f")))
			}),
		},
		{
			name:   "lseek SEEK_DATA and SEEK_HOLE on a sparse lower file",
			lowers: []layer{{"sp": sparse(3<<20, map[int64]string{1 << 20: "data"})}},
			op: ops(func(r *rec) {
				fd, err := unix.Open(r.p("sp"), unix.O_RDONLY, 0)
				r.errno("open sp", err)
				if err != nil {
					return
				}
				defer unix.Close(fd)
				for _, q := range []struct {
					name   string
					off    int64
					whence int
				}{{"SEEK_DATA 0", 0, unix.SEEK_DATA}, {"SEEK_HOLE 0", 0, unix.SEEK_HOLE},
					{"SEEK_HOLE 1M", 1 << 20, unix.SEEK_HOLE}, {"SEEK_DATA past data", 2 << 20, unix.SEEK_DATA},
					{"SEEK_DATA past EOF", 4 << 20, unix.SEEK_DATA}, {"SEEK_END", 0, unix.SEEK_END}} {
					off, err := unix.Seek(fd, q.off, q.whence)
					r.errno(q.name, err)
					r.val(q.name+" offset", off)
				}
				r.errno("fsync read-only fd", unix.Fsync(fd))
			}),
		},
		{
			name:   "mkdir over an existing lower name fails with EEXIST",
			lowers: []layer{base},
			op: ops(func(r *rec) {
				r.errno("mkdir d", unix.Mkdir(r.p("d"), 0o755))
				r.errno("mkdir a", unix.Mkdir(r.p("a"), 0o755))
				r.errno("mkdir new", unix.Mkdir(r.p("new"), 0o705))
				r.errno("rmdir new", unix.Rmdir(r.p("new")))
				r.errno("rmdir a", unix.Rmdir(r.p("a")))
				r.errno("unlink d", unix.Unlink(r.p("d")))
			}),
		},
		{
			name:   "renaming a lower file to a new name copies it up and whites out the old name",
			lowers: []layer{base},
			op: ops(func(r *rec) {
				r.errno("rename a c", unix.Rename(r.p("a"), r.p("c")))
				r.ls(".")
				r.read("c")
			}),
			checkUpper: allOf(upperIs("a", "whiteout"), upperIs("c", "file")),
		},
		{
			name:   "renaming a lower file over another lower file",
			lowers: []layer{base},
			op: ops(func(r *rec) {
				r.errno("rename a b", unix.Rename(r.p("a"), r.p("b")))
				r.ls(".")
				r.read("b")
			}),
			want: []string{`read b: "lower a"`},
		},
		{
			name:   "renaming an upper file over a lower file",
			lowers: []layer{base},
			upper:  layer{"u": file("upper")},
			op: ops(func(r *rec) {
				r.errno("rename u a", unix.Rename(r.p("u"), r.p("a")))
				r.ls(".")
				r.read("a")
			}),
			checkUpper: upperIs("u", "absent"),
		},
		{
			name:   "renaming onto a whited-out name",
			lowers: []layer{base},
			op: ops(func(r *rec) {
				r.errno("unlink b", unix.Unlink(r.p("b")))
				r.errno("rename a b", unix.Rename(r.p("a"), r.p("b")))
				r.ls(".")
				r.read("b")
			}),
		},
		{
			name:   "RENAME_NOREPLACE fails on a lower target and succeeds on a whited-out one",
			lowers: []layer{base},
			op: ops(func(r *rec) {
				r.errno("noreplace a b", unix.Renameat2(unix.AT_FDCWD, r.p("a"), unix.AT_FDCWD, r.p("b"), unix.RENAME_NOREPLACE))
				r.errno("unlink b", unix.Unlink(r.p("b")))
				r.errno("noreplace a b again", unix.Renameat2(unix.AT_FDCWD, r.p("a"), unix.AT_FDCWD, r.p("b"), unix.RENAME_NOREPLACE))
				r.ls(".")
				r.read("b")
			}),
			want: []string{"noreplace a b: EEXIST", "noreplace a b again: ok"},
		},
		{
			name:   "RENAME_EXCHANGE swaps two lower files",
			lowers: []layer{base},
			op: ops(func(r *rec) {
				r.errno("exchange a b", unix.Renameat2(unix.AT_FDCWD, r.p("a"), unix.AT_FDCWD, r.p("b"), unix.RENAME_EXCHANGE))
				r.read("a")
				r.read("b")
				r.errno("exchange a missing", unix.Renameat2(unix.AT_FDCWD, r.p("a"), unix.AT_FDCWD, r.p("missing"), unix.RENAME_EXCHANGE))
			}),
		},
		{
			name:   "renaming a directory that exists only in the upper layer",
			lowers: []layer{base},
			upper:  layer{"ud/f": file("f"), "ud/sub/g": file("g")},
			op: ops(func(r *rec) {
				r.errno("rename ud d2", unix.Rename(r.p("ud"), r.p("d2")))
				r.ls("d2")
				r.ls("d2/sub")
				r.stat("ud")
			}),
		},
		{
			name:   "renaming a directory with lower content fails with EXDEV",
			lowers: []layer{base},
			upper:  layer{"d/u": file("u")},
			op: ops(func(r *rec) {
				r.errno("rename d d2", unix.Rename(r.p("d"), r.p("d2")))
				r.errno("rename d/x d/z", unix.Rename(r.p("d/x"), r.p("d/z")))
				r.ls("d")
			}),
			want: []string{"rename d d2: EXDEV"},
		},
		{
			// Readlink reads into 256 bytes first and grows the buffer.
			name:   "readlink of targets around the first read buffer's size",
			lowers: []layer{base},
			op: ops(func(r *rec) {
				for _, n := range []int{255, 256, 257, 1000, 4095} {
					s := fmt.Sprintf("s%d", n)
					r.errno("symlink "+s, unix.Symlink(strings.Repeat("t", n), r.p(s)))
					l, err := os.Readlink(r.p(s))
					r.errno("readlink "+s, err)
					r.val("readlink "+s+" is the target", l == strings.Repeat("t", n))
				}
			}),
		},
		{
			name:   "symlink, readlink and link",
			lowers: []layer{base},
			op: ops(func(r *rec) {
				r.errno("symlink s -> a", unix.Symlink("a", r.p("s")))
				l, err := os.Readlink(r.p("s"))
				r.errno("readlink s", err)
				r.val("readlink s", l)
				r.read("s")
				r.errno("link b h", unix.Link(r.p("b"), r.p("h")))
				r.errno("link d dl", unix.Link(r.p("d"), r.p("dl")))
				r.stat("b")
				r.stat("h")
				r.errno("unlink b", unix.Unlink(r.p("b")))
				r.stat("h")
			}),
			want: []string{"link d dl: EPERM"},
		},
		{
			name:   "mknod makes fifos, sockets and character devices",
			lowers: []layer{base},
			op: ops(func(r *rec) {
				r.errno("mkfifo p", unix.Mkfifo(r.p("p"), 0o640))
				r.errno("mknod sock", unix.Mknod(r.p("sock"), unix.S_IFSOCK|0o755, 0))
				r.errno("mknod null", unix.Mknod(r.p("null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
				r.errno("mknod over lower", unix.Mknod(r.p("a"), unix.S_IFIFO|0o640, 0))
				r.stat("p")
				r.stat("sock")
				r.stat("null")
				r.errno("write to null", os.WriteFile(r.p("null"), []byte("gone"), 0))
			}),
		},
		{
			// Once the kernel asks for attributes, lookups read them ahead (fs
			// preloadXattrs): each must be its name's topmost copy's, and a change after
			// the read ahead must show.
			name: "xattrs read ahead by a listing are each file's topmost copy's",
			lowers: []layer{
				{"d": dir(), "d/b": file("top b").xattr("user.v", "top-b")},
				{"d": dir().xattr("user.dv", "dir"), "d/a": file("a").xattr("user.v", "low-a"),
					"d/b": file("low b").xattr("user.v", "low-b"), "d/c": file("c"),
					"d/e": file("e").xattr("user.v", "low-e")},
			},
			op: ops(func(r *rec) {
				r.getxattr("d/a", "user.v") // the kernel asks: lookups read ahead from now on
				r.ls("d")
				for _, n := range []string{"d/a", "d/b", "d/c", "d/e"} {
					r.stat(n)
					r.getxattr(n, "user.v")
					r.xattrNames(n)
				}
				r.errno("setxattr d/c user.n", unix.Setxattr(r.p("d/c"), "user.n", []byte("new"), 0))
				r.errno("removexattr d/e user.v", unix.Removexattr(r.p("d/e"), "user.v"))
				r.ls("d")
				r.getxattr("d/c", "user.n")
				r.getxattr("d/e", "user.v")
				r.xattrNames("d/c")
				r.xattrNames("d/e")
			}),
		},
		{
			name:   "xattrs set, get, list and remove on lower files and directories",
			lowers: []layer{{"f": file("f").xattr("user.keep", "k"), "d": dir().xattr("user.dk", "v")}},
			op: ops(func(r *rec) {
				r.errno("setxattr f user.new", unix.Setxattr(r.p("f"), "user.new", []byte("n"), 0))
				r.errno("XATTR_CREATE existing", unix.Setxattr(r.p("f"), "user.keep", []byte("x"), unix.XATTR_CREATE))
				r.errno("XATTR_REPLACE missing", unix.Setxattr(r.p("f"), "user.none", []byte("x"), unix.XATTR_REPLACE))
				r.getxattr("f", "user.keep")
				r.getxattr("f", "user.none")
				r.errno("removexattr d user.dk", unix.Removexattr(r.p("d"), "user.dk"))
				r.errno("removexattr d user.dk again", unix.Removexattr(r.p("d"), "user.dk"))
				r.errno("setxattr trusted.foo", unix.Setxattr(r.p("d"), "trusted.foo", []byte("t"), 0))
				r.xattrNames("f")
				r.xattrNames("d")
				buf := make([]byte, 1)
				_, err := unix.Getxattr(r.p("f"), "user.keep", buf[:0])
				r.errno("getxattr size query", err)
				_, err = unix.Getxattr(r.p("f"), "user.new", buf[:0])
				r.errno("getxattr small buffer", err)
			}),
		},
		{
			name:   "statfs answers for the mount",
			lowers: []layer{base},
			op: ops(func(r *rec) {
				var s unix.Statfs_t
				r.errno("statfs", unix.Statfs(r.mnt, &s))
				r.val("namelen", s.Namelen)
				r.val("bsize", s.Bsize)
				r.val("has free blocks", s.Bfree > 0 && s.Bavail > 0)
			}),
		},
		{
			name: "readdir merges layers without duplicates or whiteouts and is stable across seekdir",
			lowers: []layer{
				{"d/a1": file(""), "d/a2": file(""), "d/dup": file("top"), "d/w": whiteout(), "d/s": dir()},
				{"d/b1": file(""), "d/b2": file(""), "d/dup": file("bottom"), "d/w": file("hidden"), "d/s/x": file("")},
				{"d/c1": file(""), "d/c2": file(""), "d/c3": file(""), "d/c4": file("")},
			},
			upper: layer{"d/u1": file(""), "d/u2": file(""), "d/dup": file("upper")},
			op: ops(func(r *rec) {
				r.ls("d")
				first, rest, again, err := readdirSeek(r.p("d"))
				r.errno("readdir with seek", err)
				r.val("entries before telldir", len(first) > 0)
				r.val("all entries", sortedConcat(first, rest))
				r.val("same entries after seekdir", equalStrings(rest, again))
			}),
			want: []string{"same entries after seekdir: true"},
		},
		{
			name:   "mmap reads a lower file and MAP_SHARED writes reach the file",
			lowers: []layer{{"f": file(ten), "g": file(ten)}},
			op: ops(func(r *rec) {
				fd, err := unix.Open(r.p("f"), unix.O_RDONLY, 0)
				r.errno("open f", err)
				if err == nil {
					m, err := unix.Mmap(fd, 0, 10, unix.PROT_READ, unix.MAP_SHARED)
					r.errno("mmap f read", err)
					if err == nil {
						r.val("mapped f", string(m))
						unix.Munmap(m)
					}
					unix.Close(fd)
				}
				fd, err = unix.Open(r.p("g"), unix.O_RDWR, 0)
				r.errno("open g rw", err)
				if err == nil {
					m, err := unix.Mmap(fd, 0, 10, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
					r.errno("mmap g shared", err)
					if err == nil {
						copy(m[2:], "MM")
						r.errno("msync", unix.Msync(m, unix.MS_SYNC))
						unix.Munmap(m)
					}
					unix.Close(fd)
				}
				r.read("g")
			}),
			want: []string{`mapped f: 0123456789`, `read g: "01MM456789"`},
		},
		{
			name:   "flock and OFD fcntl locks conflict between open files",
			lowers: []layer{{"f": file(ten)}},
			op: ops(func(r *rec) {
				a, err1 := unix.Open(r.p("f"), unix.O_RDWR, 0)
				b, err2 := unix.Open(r.p("f"), unix.O_RDWR, 0)
				r.errno("open a", err1)
				r.errno("open b", err2)
				if err1 != nil || err2 != nil {
					return
				}
				defer unix.Close(a)
				defer unix.Close(b)
				r.errno("flock a EX", unix.Flock(a, unix.LOCK_EX|unix.LOCK_NB))
				r.errno("flock b EX", unix.Flock(b, unix.LOCK_EX|unix.LOCK_NB))
				r.errno("flock a UN", unix.Flock(a, unix.LOCK_UN))
				r.errno("flock b EX after unlock", unix.Flock(b, unix.LOCK_EX|unix.LOCK_NB))
				lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 5}
				r.errno("OFD setlk a", unix.FcntlFlock(uintptr(a), unix.F_OFD_SETLK, &lk))
				lk2 := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 2, Len: 5}
				r.errno("OFD setlk b overlapping", unix.FcntlFlock(uintptr(b), unix.F_OFD_SETLK, &lk2))
				q := unix.Flock_t{Type: unix.F_WRLCK, Start: 0, Len: 0}
				r.errno("OFD getlk b", unix.FcntlFlock(uintptr(b), unix.F_OFD_GETLK, &q))
				r.val("conflicting lock", []int64{int64(q.Type), q.Start, q.Len})
				posix := unix.Flock_t{Type: unix.F_RDLCK, Start: 0, Len: 0}
				r.errno("posix setlk", unix.FcntlFlock(uintptr(a), unix.F_SETLK, &posix))
			}),
			want: []string{"flock b EX: EAGAIN", "OFD setlk b overlapping: EAGAIN"},
		},
	})
}

// readdirSeek reads part of dir, remembers the offset (telldir), reads the
// rest, seeks back (seekdir) and reads the rest again.
func readdirSeek(dir string) (first, rest, again []string, err error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, nil, nil, err
	}
	defer unix.Close(fd)
	// A buffer this small holds only a few entries per getdents call.
	buf := make([]byte, 100)
	n, err := unix.ReadDirent(fd, buf)
	if err != nil {
		return nil, nil, nil, err
	}
	_, _, first = unix.ParseDirent(buf[:n], -1, nil)
	off, err := unix.Seek(fd, 0, unix.SEEK_CUR)
	if err != nil {
		return nil, nil, nil, err
	}
	readRest := func() ([]string, error) {
		var names []string
		big := make([]byte, 8192)
		for {
			n, err := unix.ReadDirent(fd, big)
			if err != nil || n == 0 {
				return names, err
			}
			_, _, names = unix.ParseDirent(big[:n], -1, names)
		}
	}
	if rest, err = readRest(); err != nil {
		return
	}
	if _, err = unix.Seek(fd, off, unix.SEEK_SET); err != nil {
		return
	}
	again, err = readRest()
	return
}

func sortedConcat(a, b []string) []string {
	all := append(append([]string{}, a...), b...)
	sort.Strings(all)
	return all
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
