package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The requests the kernel keeps to itself (issue 5, "Kernel caching"; README, "Round
// trips"): after a first operation, the same one again, or the one that follows it,
// sends the daemon nothing, or only what the table says. Counted in the daemon's -d
// traffic between two marker lookups. A regression here (a go-fuse default, a lost
// flag) would not show as an error anywhere else, only as a slower benchmark.
func TestRoundTripsTheKernelKeeps(t *testing.T) {
	lower := layer{
		"dir":   dir(),
		"dir/a": file("a"),
		"dir/b": file("b"),
		"f":     file("lower data"),
		"g":     file("lower data"),
	}
	type mnt struct{ dir string }
	p := func(m mnt, name string) string { return filepath.Join(m.dir, name) }
	tests := []struct {
		name    string
		env     []string
		prepare func(m mnt) error
		op      func(m mnt) error
		exactly map[string]int // opcodes and how many of each; any other request fails
	}{
		{name: "a second stat of a lower file asks nothing",
			prepare: func(m mnt) error { _, err := os.Lstat(p(m, "f")); return err },
			op:      func(m mnt) error { _, err := os.Lstat(p(m, "f")); return err }},
		{name: "a second stat of a name that does not exist asks nothing",
			prepare: func(m mnt) error { return wantENOENT(os.Lstat(p(m, "missing"))) },
			op:      func(m mnt) error { return wantENOENT(os.Lstat(p(m, "missing"))) }},
		{name: "a second listing of a directory asks nothing (no OPENDIR, READDIR or RELEASEDIR)",
			prepare: func(m mnt) error { _, err := os.ReadDir(p(m, "dir")); return err },
			op:      func(m mnt) error { _, err := os.ReadDir(p(m, "dir")); return err }},
		{name: "a stat of a name a listing returned asks nothing",
			prepare: func(m mnt) error { _, err := os.ReadDir(p(m, "dir")); return err },
			op:      func(m mnt) error { _, err := os.Lstat(p(m, "dir/b")); return err }},
		{name: "reading a file again opens it, and neither reads through the daemon nor flushes",
			prepare: func(m mnt) error { return readRaw(p(m, "f")) },
			op:      func(m mnt) error { return readRaw(p(m, "f")) },
			exactly: map[string]int{"OPEN": 1}},
		// Every passed-through read marks the inode's atime stale (fuse_file_accessed),
		// so os.ReadFile's fstat would always be a GETATTR: small lower files are not
		// passed through. A READ through the daemon does it too (fuse_readpages_end);
		// prepare reads twice, so this case holds whether or not the first read needed
		// one (the case below checks that it does not).
		{name: "re-reading a small lower file as os.ReadFile does (open, fstat, read, close) is an OPEN alone",
			prepare: func(m mnt) error {
				if _, err := os.ReadFile(p(m, "f")); err != nil {
					return err
				}
				_, err := os.ReadFile(p(m, "f"))
				return err
			},
			op:      func(m mnt) error { _, err := os.ReadFile(p(m, "f")); return err },
			exactly: map[string]int{"OPEN": 1}},
		// The daemon stores a small lower file's data in the page cache with the OPEN
		// (fs fillCache): no READ, so neither a round trip nor a stale atime. prepare
		// reads another file first: the mount's first close is a FLUSH, answered once.
		{name: "a first os.ReadFile of a small lower file is an OPEN alone",
			prepare: func(m mnt) error { return lstatAndRead(p(m, "f"), p(m, "g")) },
			op:      func(m mnt) error { return readsLower(p(m, "f")) },
			exactly: map[string]int{"OPEN": 1}},
		{name: "without passthrough too, a first os.ReadFile of a small lower file is an OPEN alone",
			env:     []string{"COWFS_DATAPATH=plain"},
			prepare: func(m mnt) error { return lstatAndRead(p(m, "f"), p(m, "g")) },
			op:      func(m mnt) error { return readsLower(p(m, "f")) },
			exactly: map[string]int{"OPEN": 1}},
		{name: "without passthrough too, a read of a file read before comes from the page cache",
			env:     []string{"COWFS_DATAPATH=plain"},
			prepare: func(m mnt) error { return readRaw(p(m, "f")) },
			op:      func(m mnt) error { return readRaw(p(m, "f")) },
			exactly: map[string]int{"OPEN": 1}},
		{name: "a chmod is one SETATTR, and a stat after it asks nothing",
			prepare: func(m mnt) error { _, err := os.Lstat(p(m, "g")); return err },
			op: func(m mnt) error {
				if err := os.Chmod(p(m, "g"), 0o600); err != nil {
					return err
				}
				fi, err := os.Lstat(p(m, "g"))
				if err == nil && fi.Mode().Perm() != 0o600 {
					err = fmt.Errorf("mode %v after chmod 0600", fi.Mode())
				}
				return err
			},
			exactly: map[string]int{"SETATTR": 1}},
		{name: "a file's ACL is asked for once",
			prepare: func(m mnt) error { return noACL(p(m, "f")) },
			op:      func(m mnt) error { return noACL(p(m, "f")) }},
		// The GETATTR is the parent's: a create makes the kernel drop the directory's
		// attributes (fuse_dir_changed), and the stat's path walk checks its mode.
		{name: "a create is a LOOKUP and a CREATE, and a stat of the new file asks only for its parent",
			prepare: func(m mnt) error { return readRaw(p(m, "dir/a")) },
			op: func(m mnt) error {
				if err := writeRaw(p(m, "dir/new"), unix.O_CREAT|unix.O_EXCL, nil); err != nil {
					return err
				}
				_, err := os.Lstat(p(m, "dir/new"))
				return err
			},
			exactly: map[string]int{"LOOKUP": 1, "CREATE": 1, "GETATTR": 1}},
		{name: "without passthrough, a 1 MiB write(2) is one WRITE",
			env:     []string{"COWFS_DATAPATH=plain"},
			prepare: func(m mnt) error { return writeRaw(p(m, "big"), unix.O_CREAT, []byte("x")) },
			op:      func(m mnt) error { return writeRaw(p(m, "big"), 0, make([]byte, 1<<20)) },
			exactly: map[string]int{"OPEN": 1, "WRITE": 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tm := newTestMountOpts(t, fuseKind, mountOpts{log: true, env: tc.env}, lower, layer{})
			m := mnt{tm.dir}
			if tc.prepare != nil {
				if err := tc.prepare(m); err != nil {
					t.Fatalf("prepare: %v", err)
				}
			}
			mark := func(name string) {
				if err := wantENOENT(os.Lstat(p(m, name))); err != nil {
					t.Fatalf("marker %s: %v", name, err)
				}
			}
			mark("mark-before")
			if err := tc.op(m); err != nil {
				t.Fatalf("op: %v", err)
			}
			mark("mark-after")
			tm.unmount() // the daemon has written its log
			log, err := os.ReadFile(tm.logPath)
			if err != nil {
				t.Fatal(err)
			}
			got, lines, err := requestsBetween(string(log), `"mark-before"`, `"mark-after"`)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.exactly
			if want == nil {
				want = map[string]int{}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("requests: %v, want %v:\n%s", got, want, strings.Join(lines, "\n"))
			}
		})
	}
}

// requestsBetween counts the requests (by opcode) logged by cowfs -d after the line
// holding from and before the one holding to, and those lines, but ignoredRequests.
func requestsBetween(log, from, to string) (map[string]int, []string, error) {
	rx := regexp.MustCompile(`\brx \d+: ([A-Z_]+) `)
	got := map[string]int{}
	var lines []string
	in, seen := false, 0
	for _, line := range strings.Split(log, "\n") {
		m := rx.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		switch {
		case strings.Contains(line, from):
			in, seen = true, seen+1
		case strings.Contains(line, to):
			if !in {
				return nil, nil, fmt.Errorf("marker %s logged before %s", to, from)
			}
			return got, lines, nil
		case in && !ignoredRequests[m[1]]:
			got[m[1]]++
			lines = append(lines, line)
		}
	}
	return nil, nil, fmt.Errorf("markers %s and %s not both in the daemon's log (%d of the first)", from, to, seen)
}

// ignoredRequests are not counted: the kernel sends FORGETs when it likes, and an
// INTERRUPT when the calling thread gets a signal during a request (Go's preemption
// signals, in this process). RELEASE comes after the close has returned, and may come
// after the marker.
var ignoredRequests = map[string]bool{"FORGET": true, "BATCH_FORGET": true, "INTERRUPT": true, "RELEASE": true}

// readRaw reads a file to its end through system calls alone: no fstat, and no epoll
// registration (Go's runtime would make the kernel send POLL).
func readRaw(name string) error {
	fd, err := unix.Open(name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(fd, buf)
		if err != nil || n == 0 {
			return err
		}
	}
}

// writeRaw opens name write-only with the extra flags, writes data in one write(2) and
// closes it, through system calls alone.
func writeRaw(name string, flags int, data []byte) error {
	fd, err := unix.Open(name, unix.O_WRONLY|unix.O_CLOEXEC|flags, 0o644)
	if err != nil {
		return err
	}
	if len(data) > 0 {
		if n, err := unix.Write(fd, data); err != nil || n != len(data) {
			unix.Close(fd)
			return fmt.Errorf("write of %d bytes: %d, %v", len(data), n, err)
		}
	}
	return unix.Close(fd)
}

func wantENOENT(_ os.FileInfo, err error) error {
	if !os.IsNotExist(err) {
		return fmt.Errorf("got %v, want ENOENT", err)
	}
	return nil
}

// noACL reads f's access ACL and expects there is none.
func noACL(f string) error {
	_, err := unix.Lgetxattr(f, "system.posix_acl_access", make([]byte, 256))
	if err != unix.ENODATA {
		return fmt.Errorf("getxattr system.posix_acl_access: %v, want ENODATA", err)
	}
	return nil
}

// readsLower reads path as os.ReadFile does (open, fstat, read to the end, close),
// through system calls alone (Go's poller would register the fd: one POLL), and wants
// the lower file's content.
func readsLower(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	var got []byte
	for {
		n, err := unix.Read(fd, buf)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "lower data" || st.Size != int64(len(got)) {
		return fmt.Errorf("read %q (fstat: %d bytes), want %q", got, st.Size, "lower data")
	}
	return nil
}

// lstatAndRead stats name and reads other: name has its node and attributes, and the
// mount has had its first close.
func lstatAndRead(name, other string) error {
	if _, err := os.Lstat(name); err != nil {
		return err
	}
	return readRaw(other)
}
