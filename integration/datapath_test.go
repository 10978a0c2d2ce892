package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// dataPaths are the ways file data can travel (fs/passthrough.go), forced with
// COWFS_DATAPATH; without privileges "passthrough" falls back to plain.
var dataPaths = []string{"passthrough", "writeback", "plain"}

// upperOf is the upper directory of the test mount whose merged view is mnt
// (newTestMountOpts's layout).
func upperOf(mnt string) string { return filepath.Join(filepath.Dir(mnt), "upperfs", "upper") }

// fdRec records reads and writes through fds, one result line each.
type fdRec struct{ r *rec }

func (f fdRec) open(label, path string, flags int) int {
	fd, err := unix.Open(f.r.p(path), flags|unix.O_CLOEXEC, 0o644)
	f.r.errno("open "+label, err)
	return fd
}

func (f fdRec) pwrite(label string, fd int, off int64, data string) {
	n, err := unix.Pwrite(fd, []byte(data), off)
	f.r.val("pwrite "+label, fmt.Sprintf("%d %s", n, errnoString(err)))
}

func (f fdRec) write(label string, fd int, data string) {
	n, err := unix.Write(fd, []byte(data))
	f.r.val("write "+label, fmt.Sprintf("%d %s", n, errnoString(err)))
}

func (f fdRec) pread(label string, fd int) {
	buf := make([]byte, 1<<16)
	n, err := unix.Pread(fd, buf, 0)
	if err != nil {
		f.r.errno("pread "+label, err)
		return
	}
	f.r.val("pread "+label, fmt.Sprintf("%q", buf[:n]))
}

func (f fdRec) fstatSize(label string, fd int) {
	var st unix.Stat_t
	err := unix.Fstat(fd, &st)
	f.r.val("fstat size "+label, fmt.Sprintf("%d %s", st.Size, errnoString(err)))
}

func (f fdRec) close(fds ...int) {
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// TestDataPath runs the file data cases on kernel overlayfs and on cowfs with each
// data path: passthrough (root only), the writeback cache, and plain writes. The
// runner checks that the lower layers are unchanged after every case.
func TestDataPath(t *testing.T) {
	const ten = "0123456789"
	big := strings.Repeat("abcdefgh", 2048) // 16 KiB: more than one page
	base := []behaviourCase{
		{
			name:   "a read-only fd open on a lower file during a copy-up by another fd reads the writes made after it, and so does a new fd",
			lowers: []layer{{"d/f": file(ten)}},
			op: ops(func(r *rec) {
				f := fdRec{r}
				ro := f.open("ro", "d/f", unix.O_RDONLY)
				f.pread("ro before", ro)
				rw := f.open("rw", "d/f", unix.O_RDWR) // copies up
				f.pwrite("rw", rw, 2, "XY")
				f.pread("ro after write", ro)
				ro2 := f.open("ro2", "d/f", unix.O_RDONLY)
				f.pread("ro2", ro2)
				f.pwrite("rw past end", rw, 12, "Z")
				f.pread("ro after extension", ro)
				f.fstatSize("ro", ro)
				f.close(rw)
				rw2 := f.open("rw2", "d/f", unix.O_WRONLY)
				f.pwrite("rw2", rw2, 0, "W")
				f.close(rw2)
				f.pread("ro at last", ro)
				f.pread("ro2 at last", ro2)
				f.close(ro, ro2)
				r.read("d/f")
			}),
			want:       []string{`pread ro after write: "01XY456789"`, `pread ro at last: "W1XY456789\x00\x00Z"`},
			checkUpper: upperIs("d/f", "file"),
		},
		{
			name:   "once every fd is closed, new fds read and write the copied-up file",
			lowers: []layer{{"f": file(ten)}},
			op: ops(func(r *rec) {
				f := fdRec{r}
				ro := f.open("ro", "f", unix.O_RDONLY)
				rw := f.open("rw", "f", unix.O_RDWR)
				f.pwrite("rw", rw, 0, "A")
				f.close(ro, rw)
				rw = f.open("rw again", "f", unix.O_RDWR)
				ro = f.open("ro again", "f", unix.O_RDONLY)
				f.pwrite("rw again", rw, 1, "B")
				f.pread("ro again", ro)
				f.close(ro, rw)
				r.read("f")
			}),
			want: []string{`pread ro again: "AB23456789"`},
		},
		{
			name:   "a write-only open writes a few bytes into the middle of a lower file and keeps the rest",
			lowers: []layer{{"f": file(big)}},
			op: ops(func(r *rec) {
				f := fdRec{r}
				w := f.open("w", "f", unix.O_WRONLY)
				f.pwrite("w", w, 4099, "XYZ")
				f.close(w)
				r.read("f")
			}),
		},
		{
			name:   "size and contents after writes show in stat and fstat before close",
			lowers: []layer{{"f": file(ten)}},
			op: ops(func(r *rec) {
				f := fdRec{r}
				var before unix.Stat_t
				unix.Stat(r.p("f"), &before)
				time.Sleep(20 * time.Millisecond)
				w := f.open("w", "f", unix.O_WRONLY)
				f.pwrite("w", w, 20, "tail")
				f.fstatSize("w", w)
				var st unix.Stat_t
				r.errno("stat f", unix.Stat(r.p("f"), &st))
				r.val("size", st.Size)
				r.val("mtime moved", st.Mtim != before.Mtim)
				f.close(w)
				r.errno("stat f after close", unix.Stat(r.p("f"), &st))
				r.val("size after close", st.Size)
				r.val("mtime after close moved", st.Mtim != before.Mtim)
			}),
			want: []string{"size: 24", "mtime moved: true"},
		},
		{
			name:   "O_APPEND writes through two open files interleave at the end",
			lowers: []layer{{"log": file("start\n")}},
			op: ops(func(r *rec) {
				f := fdRec{r}
				a := f.open("a", "log", unix.O_WRONLY|unix.O_APPEND)
				b := f.open("b", "log", unix.O_WRONLY|unix.O_APPEND)
				for i := 0; i < 3; i++ {
					f.write("a", a, fmt.Sprintf("a%d\n", i))
					f.write("b", b, fmt.Sprintf("b%d\n", i))
				}
				f.pwrite("a at 0 (appends anyway)", a, 0, "p\n")
				f.close(a, b)
				r.read("log")
			}),
			want: []string{`read log: "start\na0\nb0\na1\nb1\na2\nb2\np\n"`},
		},
		{
			name:   "O_APPEND writes from two processes all land",
			lowers: []layer{{"log": file("")}},
			op: ops(func(r *rec) {
				var cmds []*exec.Cmd
				for _, who := range []string{"x", "y"} {
					c := exec.Command("sh", "-c", `for i in 1 2 3 4 5 6 7 8 9 10; do echo `+who+`$i >> "$1"; done`, "sh", r.p("log"))
					r.errno("start "+who, c.Start())
					cmds = append(cmds, c)
				}
				for _, c := range cmds {
					r.errno("wait", c.Wait())
				}
				b, err := os.ReadFile(r.p("log"))
				r.errno("read log", err)
				lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
				sort.Strings(lines)
				r.val("lines", strings.Join(lines, " "))
				// The order of the lines is the scheduler's: not for the snapshots.
				r.errno("unlink log", unix.Unlink(r.p("log")))
			}),
			want: []string{"lines: x1 x10 x2 x3 x4 x5 x6 x7 x8 x9 y1 y10 y2 y3 y4 y5 y6 y7 y8 y9"},
		},
		{
			name:   "after fsync the upper file holds the written data",
			lowers: []layer{{"f": file(ten)}},
			op: ops(func(r *rec) {
				f := fdRec{r}
				w := f.open("w", "f", unix.O_RDWR)
				f.pwrite("w", w, 3, "sync")
				r.errno("fsync", unix.Fsync(w))
				b, err := os.ReadFile(filepath.Join(upperOf(r.mnt), "f"))
				r.errno("read upper", err)
				r.val("upper", fmt.Sprintf("%q", b))
				f.close(w)
			}),
			want: []string{`upper: "012sync789"`},
		},
		{
			name:   "a write shows through another name of an upper hard link",
			lowers: []layer{{"f": file(ten)}},
			op: ops(func(r *rec) {
				f := fdRec{r}
				r.errno("link", unix.Link(r.p("f"), r.p("g")))
				w := f.open("w", "f", unix.O_WRONLY)
				f.pwrite("w", w, 10, "more")
				var st unix.Stat_t
				r.errno("stat g", unix.Stat(r.p("g"), &st))
				r.val("size of g", st.Size)
				f.close(w)
				r.read("g")
				g := f.open("g", "g", unix.O_WRONLY|unix.O_APPEND)
				f.write("g", g, "!")
				f.close(g)
				r.read("f")
			}),
			want: []string{"size of g: 14", `read g: "0123456789more"`, `read f: "0123456789more!"`},
		},
		{
			name:   "truncate through the fd and through the name, with writes between",
			lowers: []layer{{"f": file(big)}},
			op: ops(func(r *rec) {
				f := fdRec{r}
				w := f.open("w", "f", unix.O_RDWR)
				f.pwrite("w", w, 100, "hello")
				r.errno("ftruncate 102", unix.Ftruncate(w, 102))
				f.pread("w", w)
				r.errno("truncate 4", unix.Truncate(r.p("f"), 4))
				f.fstatSize("w", w)
				f.pwrite("w past end", w, 6, "x")
				f.pread("w again", w)
				f.close(w)
				r.read("f")
			}),
		},
		{
			name:   "a new file written, read through another fd and appended to",
			lowers: []layer{{"d/keep": file("k")}},
			op: ops(func(r *rec) {
				f := fdRec{r}
				w := f.open("create", "d/new", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL)
				f.write("w", w, big)
				ro := f.open("ro", "d/new", unix.O_RDONLY)
				f.fstatSize("ro", ro)
				a := f.open("append", "d/new", unix.O_WRONLY|unix.O_APPEND)
				f.write("a", a, "END")
				f.pwrite("w in the middle", w, 8190, "MID")
				f.close(w, a)
				buf := make([]byte, 1<<16)
				n, err := unix.Pread(ro, buf, 0)
				r.errno("pread ro", err)
				r.val("ro size", n)
				r.val("ro tail", fmt.Sprintf("%q", buf[n-5:n]))
				r.val("ro middle", fmt.Sprintf("%q", buf[8188:8195]))
				f.close(ro)
			}),
			want: []string{"ro size: 16387", `ro tail: "ghEND"`},
		},
		{
			name:   "a shared mapping of a copied-up file writes what read sees",
			lowers: []layer{{"f": file(big)}},
			op: ops(func(r *rec) {
				f := fdRec{r}
				fd := f.open("rw", "f", unix.O_RDWR)
				m, err := unix.Mmap(fd, 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
				r.errno("mmap", err)
				if err == nil {
					copy(m[4094:], "MAPPED")
					r.errno("msync", unix.Msync(m, unix.MS_SYNC))
					unix.Munmap(m)
				}
				f.close(fd)
				b, _ := os.ReadFile(r.p("f"))
				r.val("mapped bytes", fmt.Sprintf("%q", b[4090:4104]))
				r.val("unchanged after", bytes.Equal(b[4100:], []byte(big)[4100:]))
			}),
			want: []string{"unchanged after: true"},
		},
	}
	var cases []behaviourCase
	for _, dp := range dataPaths {
		for i, c := range base {
			if i == 0 && dp == "passthrough" && os.Geteuid() == 0 {
				// TestPassthroughLowerFiles checks what this case does there.
				c.fuseDiffers = "a read-only fd passed through to a lower file keeps reading it after a copy-up (README, Intended differences)"
				c.want = nil
			}
			c.name = fmt.Sprintf("%s (%s)", c.name, dp)
			c.opts.env = []string{"COWFS_DATAPATH=" + dp}
			cases = append(cases, c)
		}
	}
	runCases(t, cases)
}

// throughDaemon makes c's FUSE mount carry file data through the daemon (the writeback
// cache), where a read-only fd follows its file to the upper copy as on the kernel: with
// passthrough it keeps reading the lower file (TestPassthroughLowerFiles).
func throughDaemon(c behaviourCase) behaviourCase {
	c.opts.env = append(c.opts.env, "COWFS_DATAPATH=writeback")
	return c
}

// TestPassthroughLowerFiles: with passthrough a read-only open of a lower file is
// passed through to that file, and a copy-up while it is open (fs admit) gives the
// writer the upper copy, never the lower file that is the inode's backing file: the
// lower layer is unchanged to the byte, new opens read the upper copy (also through a
// shared mapping), and the old fd keeps reading the lower copy. A lower file smaller
// than passthroughMin goes through the daemon, and its read-only fd follows the copy-up.
func TestPassthroughLowerFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("FUSE passthrough needs root (CAP_SYS_ADMIN in the initial user namespace)")
	}
	for _, v := range []struct {
		name     string
		metacopy bool
	}{
		{name: "on a mount without metacopy"},
		{name: "on a metacopy=on mount, after a chmod copied up the metadata only", metacopy: true},
	} {
		t.Run(v.name, func(t *testing.T) { testPassthroughLowerFiles(t, v.metacopy) })
	}
}

// passthroughMin is the size below which a lower file is read through the daemon even
// with passthrough on (fs ptMinSize): the files here that must be passed through are
// larger.
const passthroughMin = 64 << 10

func testPassthroughLowerFiles(t *testing.T, metacopy bool) {
	ten := "0123456789" + strings.Repeat("-", passthroughMin)
	big := strings.Repeat("abcdefgh", passthroughMin/4)
	o := mountOpts{env: []string{DataPathEnvDefault}}
	if metacopy {
		o.extra = "metacopy=on"
	}
	m := newTestMountOpts(t, fuseKind, o, layer{"d/f": file(ten), "d/big": file(big), "d/small": file("0123456789")}, layer{})
	if metacopy {
		for _, f := range []string{"d/f", "d/big", "d/small"} {
			if err := os.Chmod(filepath.Join(m.dir, f), 0o640); err != nil {
				t.Fatal(err)
			}
		}
	}
	lowerF := filepath.Join(m.lowers[0], "d/f")
	lowerBig := filepath.Join(m.lowers[0], "d/big")
	p := func(rel string) string { return filepath.Join(m.dir, rel) }
	pread := func(fd int) string {
		buf := make([]byte, 1<<20)
		n, err := unix.Pread(fd, buf, 0)
		if err != nil {
			t.Fatalf("pread: %v", err)
		}
		return string(buf[:n])
	}
	open := func(rel string, flags int) int {
		fd, err := unix.Open(p(rel), flags|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatalf("open %s %#x: %v", rel, flags, err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		return fd
	}

	ro := open("d/f", unix.O_RDONLY)
	if got := pread(ro); got != ten {
		t.Fatalf("read-only fd before the copy-up reads %.20q", got)
	}
	rw := open("d/f", unix.O_RDWR) // copies up while ro is passed through to the lower file
	if n, err := unix.Pwrite(rw, []byte("XY"), 2); n != 2 || err != nil {
		t.Fatalf("pwrite through the fd opened after the copy-up: %d, %v", n, err)
	}
	if got := pread(ro); got != ten {
		t.Errorf("the read-only fd passed through to the lower file reads %.20q after the copy-up, want the lower copy %.20q (if it reads the writes, lower files are not passed through)", got, ten)
	}
	written := "01XY456789" + ten[10:]
	if got := pread(open("d/f", unix.O_RDONLY)); got != written {
		t.Errorf("a new read-only fd reads %.20q, want the upper copy", got)
	}
	if got := pread(rw); got != written {
		t.Errorf("the writer reads back %.20q", got)
	}

	// A shared mapping of the upper copy beside a passed-through lower fd.
	roBig := open("d/big", unix.O_RDONLY)
	rwBig := open("d/big", unix.O_RDWR)
	mm, err := unix.Mmap(rwBig, 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("shared mapping of the copied-up file while a lower fd is open: %v", err)
	}
	copy(mm[4094:], "MAPPED")
	if err := unix.Msync(mm, unix.MS_SYNC); err != nil {
		t.Errorf("msync: %v", err)
	}
	unix.Munmap(mm)
	if got := pread(open("d/big", unix.O_RDONLY))[4094:4100]; got != "MAPPED" {
		t.Errorf("a new fd reads %q where the mapping wrote", got)
	}
	if got := pread(roBig); got != big {
		t.Errorf("the lower fd of d/big changed")
	}

	// A lower file below passthroughMin goes through the daemon (a warm re-read is
	// then an OPEN alone: TestRoundTripsTheKernelKeeps), so its read-only fd follows
	// the copy-up, as on the kernel.
	roSmall := open("d/small", unix.O_RDONLY)
	if got := pread(roSmall); got != "0123456789" {
		t.Fatalf("small file reads %q", got)
	}
	if n, err := unix.Pwrite(open("d/small", unix.O_WRONLY), []byte("XY"), 2); n != 2 || err != nil {
		t.Fatalf("pwrite to the small file: %d, %v", n, err)
	}
	if got := pread(roSmall); got != "01XY456789" {
		t.Errorf("the small file's read-only fd reads %q after the copy-up, want the upper copy (passed through?)", got)
	}

	lowerSmall := filepath.Join(m.lowers[0], "d/small")
	for path, want := range map[string]string{lowerF: ten, lowerBig: big, lowerSmall: "0123456789"} {
		if b, err := os.ReadFile(path); err != nil || string(b) != want {
			t.Errorf("lower file %s changed: %d bytes, %v", path, len(b), err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(upperOf(m.dir), "d/f")); err != nil || string(b) != written {
		t.Errorf("upper copy holds %.20q, %v", b, err)
	}
}

// TestDataPathChosen checks which data path the daemon reports under -d: passthrough
// as root in the initial user namespace, the writeback cache when asked (or
// without privileges).
func TestDataPathChosen(t *testing.T) {
	requireMounts(t)
	for _, c := range []struct{ env, want string }{
		{DataPathEnvDefault, "data path passthrough"},
		{"COWFS_DATAPATH=writeback", "data path writeback"},
		{"COWFS_DATAPATH=plain", "data path plain"},
	} {
		t.Run(c.want, func(t *testing.T) {
			if c.env == DataPathEnvDefault && os.Geteuid() != 0 {
				t.Skip("passthrough needs root")
			}
			root := t.TempDir()
			for _, d := range []string{"l", "u", "w", "m"} {
				if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			mnt := filepath.Join(root, "m")
			logPath := filepath.Join(root, "daemon.log")
			logf, err := os.Create(logPath)
			if err != nil {
				t.Fatal(err)
			}
			defer logf.Close()
			cmd := exec.Command(fuseProg, "-f", "-d", "-o", fmt.Sprintf("lowerdir=%s/l,upperdir=%s/u,workdir=%s/w", root, root, root), mnt)
			cmd.Env = append(os.Environ(), c.env)
			cmd.Stderr = logf
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{}) // closed when the daemon has exited
			go func() { cmd.Wait(); close(done) }()
			t.Cleanup(func() {
				if isMountpoint(mnt) {
					exec.Command("fusermount3", "-u", mnt).Run()
				}
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					cmd.Process.Kill()
					<-done
				}
			})
			deadline := time.Now().Add(10 * time.Second)
			for !isMountpoint(mnt) {
				if time.Now().After(deadline) {
					t.Fatalf("not mounted within 10s:\n%s", firstLines(readLog(logPath), 20))
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			for try := 0; ; try++ { // EBUSY while something still looks at the new file
				out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput()
				if err == nil {
					break
				}
				if try == 20 {
					t.Fatalf("unmount: %v %s", err, out)
				}
				time.Sleep(100 * time.Millisecond)
			}
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("daemon did not exit after unmount:\n%s", firstLines(readLog(logPath), 20))
			}
			if log := readLog(logPath); !strings.Contains(log, c.want) {
				t.Errorf("daemon log lacks %q:\n%s", c.want, firstLines(log, 20))
			}
		})
	}
}

// DataPathEnvDefault is the environment entry that asks for the default data path
// (overriding a COWFS_DATAPATH the tests run under).
const DataPathEnvDefault = "COWFS_DATAPATH="

func firstLines(s string, n int) string {
	l := strings.SplitN(s, "\n", n+1)
	if len(l) > n {
		l = l[:n]
	}
	return strings.Join(l, "\n")
}

// A lower layer whose files the kernel refuses as backing files (it stacks: here a
// read-only kernel overlayfs) has its files go through the daemon, with a debug line;
// the other layers' files, upper files included, are still passed through. (go-fuse
// alone takes the first refusal for "no passthrough on this mount".)
func TestStackedLowerLayerGoesThroughTheDaemon(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("FUSE passthrough needs root (CAP_SYS_ADMIN in the initial user namespace)")
	}
	// Files large enough to be passed through (passthroughMin).
	pad := strings.Repeat(".", passthroughMin)
	fromStacked, fromPlain := "from the stacked lower"+pad, "from the plain lower"+pad
	o := mountOpts{env: []string{DataPathEnvDefault}, log: true}
	m := newTestMountOpts(t, fuseKind, o, layer{}, layer{"plain": file(fromPlain)}, layer{})
	m.unmount()
	// lower0 becomes a read-only overlayfs of two directories of its own.
	src := t.TempDir()
	for _, d := range []string{"a", "b"} {
		if err := os.Mkdir(filepath.Join(src, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(src, "a", "stacked"), []byte(fromStacked), 0o644); err != nil {
		t.Fatal(err)
	}
	stacked := m.lowers[0]
	if err := unix.Mount("overlay", stacked, "overlay", unix.MS_RDONLY, "lowerdir="+filepath.Join(src, "a")+":"+filepath.Join(src, "b")); err != nil {
		t.Fatalf("mount the stacked lower: %v", err)
	}
	t.Cleanup(func() { detach(stacked) })
	m.mount()
	t.Cleanup(m.unmount) // before the stacked lower goes
	read := func(rel, want string) {
		t.Helper()
		if b, err := os.ReadFile(filepath.Join(m.dir, rel)); err != nil || string(b) != want {
			t.Errorf("read %s: %.40q, %v; want %.40q", rel, b, err, want)
		}
	}
	read("stacked", fromStacked)
	read("plain", fromPlain)
	if err := os.WriteFile(filepath.Join(m.dir, "new"), []byte("upper"), 0o644); err != nil {
		t.Fatal(err)
	}
	read("new", "upper")
	read("stacked", fromStacked)
	// A copy-up from the stacked layer; the upper copy is passed through again.
	f, err := os.OpenFile(filepath.Join(m.dir, "stacked"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("+"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	read("stacked", fromStacked+"+")
	m.unmount() // the daemon has written its log
	log, err := os.ReadFile(m.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(src, "a", "stacked")); err != nil || string(b) != fromStacked {
		t.Errorf("the stacked lower's file holds %.40q, %v", b, err)
	}
	if !strings.Contains(string(log), "cowfs: layer 1: files go through the daemon") {
		t.Errorf("no debug line for the stacked layer 1 in the daemon's log")
	}
	// One registration per layer: the stacked layer's refused, the plain lower's and the
	// upper's taken; then the passed-through opens of plain, new and new again.
	taken := regexp.MustCompile(`BACKING_OPEN .*\(errno 0\)`).FindAllString(string(log), -1)
	refused := regexp.MustCompile(`BACKING_OPEN .*too many levels`).FindAllString(string(log), -1)
	if len(refused) != 1 || len(taken) < 1+2+3 {
		t.Errorf("backing files registered: %d, refused: %d; want at least 6 (the probe, 2 layers, 3 opens) and 1", len(taken), len(refused))
	}
}

// TestExecOfLowerFiles: exec(2) opens the file with __FMODE_EXEC among its flags, which
// FUSE passes on in the OPEN; openat2, unlike openat, refuses flags it does not know
// (EINVAL), so a daemon that handed them on could not run a lower program. Scripts
// of both sizes, on each data path (a small lower file goes through the daemon even
// with passthrough).
func TestExecOfLowerFiles(t *testing.T) {
	requireMounts(t)
	pad := "#" + strings.Repeat(".", passthroughMin) + "\n"
	script := "#!/bin/sh\necho ran\n"
	for _, env := range []string{DataPathEnvDefault, "COWFS_DATAPATH=writeback", "COWFS_DATAPATH=plain"} {
		t.Run(env, func(t *testing.T) {
			if env == DataPathEnvDefault && os.Geteuid() != 0 {
				t.Skip("passthrough needs root")
			}
			m := newTestMountOpts(t, fuseKind, mountOpts{env: []string{env}},
				layer{"small.sh": file(script).mode(0o755), "big.sh": file(script + pad).mode(0o755)}, layer{})
			for _, name := range []string{"small.sh", "big.sh"} {
				out, err := exec.Command(filepath.Join(m.dir, name)).CombinedOutput()
				if err != nil || string(out) != "ran\n" {
					t.Errorf("exec of lower %s: %q, %v", name, out, err)
				}
			}
		})
	}
}

// TestSmallLowerFilesStoredWithTheOpen: the daemon hands a small lower file's data to
// the page cache with its first open (fs fillCache). Every size around a page reads
// back whole, also through a mapping, and a copy-up after the store shows the written
// data to new and old fds alike, never the stored lower bytes.
func TestSmallLowerFilesStoredWithTheOpen(t *testing.T) {
	requireMounts(t)
	sizes := []int{1, 4095, 4096, 4097, 12345, passthroughMin - 1}
	content := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('a' + (i*7+i/4096)%26)
		}
		return string(b)
	}
	lower := layer{}
	for _, n := range sizes {
		lower[fmt.Sprintf("f%d", n)] = file(content(n))
	}
	for _, env := range []string{DataPathEnvDefault, "COWFS_DATAPATH=plain"} {
		t.Run(env, func(t *testing.T) {
			if env == DataPathEnvDefault && os.Geteuid() != 0 {
				t.Skip("passthrough needs root")
			}
			m := newTestMountOpts(t, fuseKind, mountOpts{env: []string{env}}, lower, layer{})
			for _, n := range sizes {
				p := filepath.Join(m.dir, fmt.Sprintf("f%d", n))
				if b, err := os.ReadFile(p); err != nil || string(b) != content(n) {
					t.Errorf("%d-byte lower file reads %d bytes, %v (or other bytes)", n, len(b), err)
				}
				f, err := os.Open(p)
				if err != nil {
					t.Fatal(err)
				}
				mm, err := unix.Mmap(int(f.Fd()), 0, n, unix.PROT_READ, unix.MAP_SHARED)
				if err != nil {
					t.Fatalf("mmap of the %d-byte file: %v", n, err)
				}
				if string(mm) != content(n) {
					t.Errorf("mapping of the %d-byte file differs", n)
				}
				unix.Munmap(mm)
				// A copy-up with the first fd open: the write shows everywhere.
				if err := os.WriteFile(p, []byte("new"), 0o644); err != nil {
					t.Fatal(err)
				}
				if b, err := os.ReadFile(p); err != nil || string(b) != "new" {
					t.Errorf("after the copy-up the %d-byte file reads %.20q, %v", n, b, err)
				}
				buf := make([]byte, 16)
				if k, err := f.ReadAt(buf, 0); string(buf[:k]) != "new" {
					t.Errorf("the fd opened before the copy-up of the %d-byte file reads %q, %v", n, buf[:k], err)
				}
				f.Close()
			}
		})
	}
}
