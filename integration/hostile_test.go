package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Hostile lower layers, as an untrusted image would ship them. Every operation is done
// by a worker process chrooted into the mount (as a container's programs are), so a
// symlink it follows itself resolves inside the mount: anything that changes outside
// the layers (a canary tree beside them, with its contents, modes, owners, times and
// xattrs recorded) was done by the daemon. Nothing may hang (the worker is timed) or
// crash (the daemon must still serve).

// canary is a tree beside the layers that no operation through the mount may touch.
type canary struct {
	root string
	// atime is set far in the past after the contents are hashed, so a read (relatime)
	// moves it.
	before map[string]string
}

func newCanary(t *testing.T, root string) *canary {
	t.Helper()
	c := &canary{root: root}
	files := map[string]string{"secret": "canary secret", "sub/file": "canary sub", "etc/passwd": "root:x:0:0::/:/bin/sh\n"}
	for n, content := range files {
		p := filepath.Join(root, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Lsetxattr(filepath.Join(root, "secret"), "user.canary", []byte("v"), 0); err != nil {
		t.Logf("user xattr on the canary: %v", err)
	}
	if err := os.Symlink("secret", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			ts := []unix.Timespec{unix.NsecToTimespec(old.UnixNano()), unix.NsecToTimespec(old.UnixNano())}
			unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
		}
		return nil
	})
	c.before = c.state()
	return c
}

// state describes every entry of the canary: the stat fields (atime included, taken
// before anything is read), the contents' hash and the xattrs.
func (c *canary) state() map[string]string {
	s := map[string]string{}
	var paths []string
	filepath.Walk(c.root, func(p string, fi os.FileInfo, err error) error {
		paths = append(paths, p)
		return nil
	})
	for _, p := range paths {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			s[p] = err.Error()
			continue
		}
		s[p] = fmt.Sprintf("mode=%o uid=%d gid=%d size=%d ino=%d atime=%d mtime=%d ctime=%d.%d",
			st.Mode, st.Uid, st.Gid, st.Size, st.Ino, st.Atim.Sec, st.Mtim.Sec, st.Ctim.Sec, st.Ctim.Nsec)
	}
	for _, p := range paths {
		var st unix.Stat_t
		if unix.Lstat(p, &st) == nil && st.Mode&unix.S_IFMT != unix.S_IFLNK {
			// O_NOATIME: recording the canary must not move its access times.
			fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOATIME|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
			if err == nil {
				f := os.NewFile(uintptr(fd), p)
				if st.Mode&unix.S_IFMT == unix.S_IFDIR {
					names, _ := f.Readdirnames(-1)
					sort.Strings(names)
					s[p] += " [" + strings.Join(names, ",") + "]"
				} else {
					h := sha256.New()
					io.Copy(h, f)
					s[p] += fmt.Sprintf(" sha256:%x", h.Sum(nil))
				}
				f.Close()
			}
		}
		s[p] += " xattrs{" + xattrString(p, lowerDir) + "}"
	}
	return s
}

func (c *canary) check(t *testing.T, when string) {
	t.Helper()
	after := c.state()
	var diffs []string
	for p, b := range c.before {
		if a := after[p]; a != b {
			diffs = append(diffs, fmt.Sprintf("%s:\n  before %s\n  after  %s", p, b, a))
		}
	}
	for p, a := range after {
		if _, ok := c.before[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: new: %s", p, a))
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		t.Errorf("%s: the canary beside the layers changed (an escape):\n%s", when, strings.Join(diffs, "\n"))
	}
}

type hostileArgs struct {
	Mnt   string
	Paths []string
	// Walk adds every path found by walking the mount (up to depth 12).
	Walk bool
	// Seconds repeats the operations until that long has passed (0: once).
	Seconds int
}

type hostileResult struct {
	Attempts int
	Ok       int
	Errnos   map[string]int
}

func init() { workers["hostile"] = hostileWorker }

// hostileOps are what the worker does to each path: reads, writes, creations, mode,
// owner, time and xattr changes, removals and renames.
var hostileOps = []struct {
	name        string
	destructive bool
	do          func(p string) error
}{
	{"stat", false, func(p string) error { var st unix.Stat_t; return unix.Stat(p, &st) }},
	{"lstat", false, func(p string) error { var st unix.Stat_t; return unix.Lstat(p, &st) }},
	{"readlink", false, func(p string) error { _, err := os.Readlink(p); return err }},
	{"read", false, func(p string) error {
		f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.Read(make([]byte, 4096))
		return err
	}},
	{"readdir", false, func(p string) error {
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), p)
		defer f.Close()
		_, err = f.Readdirnames(-1)
		return err
	}},
	{"getxattr", false, func(p string) error { _, err := unix.Getxattr(p, "user.canary", make([]byte, 64)); return err }},
	{"listxattr", false, func(p string) error { _, err := unix.Listxattr(p, make([]byte, 4096)); return err }},
	{"append", false, func(p string) error {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.WriteString("ESCAPE")
		return err
	}},
	{"create inside", false, func(p string) error { return os.WriteFile(p+"/escape", []byte("ESCAPE"), 0o644) }},
	{"mkdir inside", false, func(p string) error { return os.Mkdir(p+"/escape-dir", 0o755) }},
	{"mkfifo inside", false, func(p string) error { return unix.Mkfifo(p+"/escape-fifo", 0o644) }},
	{"symlink inside", false, func(p string) error { return os.Symlink("/", p+"/escape-link") }},
	{"chmod", false, func(p string) error { return unix.Chmod(p, 0o777) }},
	{"fchmodat nofollow", false, func(p string) error { return unix.Fchmodat(unix.AT_FDCWD, p, 0o777, unix.AT_SYMLINK_NOFOLLOW) }},
	{"chown", false, func(p string) error { return unix.Chown(p, 4321, 4321) }},
	{"lchown", false, func(p string) error { return unix.Lchown(p, 4321, 4321) }},
	{"utimes", false, func(p string) error { return unix.UtimesNano(p, []unix.Timespec{{Sec: 1}, {Sec: 1}}) }},
	{"lutimes", false, func(p string) error {
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{{Sec: 1}, {Sec: 1}}, unix.AT_SYMLINK_NOFOLLOW)
	}},
	{"setxattr", false, func(p string) error { return unix.Setxattr(p, "user.escape", []byte("x"), 0) }},
	{"lsetxattr trusted", false, func(p string) error { return unix.Lsetxattr(p, "trusted.escape", []byte("x"), 0) }},
	{"truncate", false, func(p string) error { return unix.Truncate(p, 1) }},
	{"link", false, func(p string) error {
		err := unix.Link(p, "/escape-hardlink")
		os.Remove("/escape-hardlink")
		return err
	}},
	{"rename in and back", false, func(p string) error {
		if err := os.WriteFile("/escape-victim", []byte("v"), 0o644); err != nil {
			return err
		}
		defer os.Remove("/escape-victim")
		if err := os.Rename("/escape-victim", p+"/escape-victim"); err != nil {
			return err
		}
		return os.Rename(p+"/escape-victim", "/escape-victim")
	}},
	{"rename", true, func(p string) error {
		if err := os.Rename(p, p+".moved"); err != nil {
			return err
		}
		return os.Rename(p+".moved", p)
	}},
	{"unlink", true, func(p string) error { return unix.Unlink(p) }},
	{"rmdir", true, func(p string) error { return unix.Rmdir(p) }},
}

// hostileWorker chroots into the mount and runs every operation on every path. A
// watchdog ends it with status 3 if one operation takes more than 20 s.
func hostileWorker(raw json.RawMessage) int {
	var a hostileArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := unix.Chroot(a.Mnt); err != nil {
		fmt.Fprintln(os.Stderr, "chroot:", err)
		return 2
	}
	if err := os.Chdir("/"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var current atomic.Value
	var started atomic.Int64
	current.Store("")
	go func() {
		for {
			time.Sleep(time.Second)
			if s := started.Load(); s != 0 && time.Since(time.Unix(0, s)) > 20*time.Second {
				fmt.Fprintf(os.Stderr, "HANG: %s for more than 20 s\n", current.Load())
				os.Exit(3)
			}
		}
	}()
	res := hostileResult{Errnos: map[string]int{}}
	deadline := time.Now().Add(time.Duration(a.Seconds) * time.Second)
	for round := 0; round == 0 || time.Now().Before(deadline); round++ {
		paths := append([]string(nil), a.Paths...)
		if a.Walk {
			paths = append(paths, walkPaths("/", 0)...)
		}
		for _, destructive := range []bool{false, true} {
			for _, p := range paths {
				for _, op := range hostileOps {
					if op.destructive != destructive {
						continue
					}
					current.Store(op.name + " " + p)
					started.Store(time.Now().UnixNano())
					err := op.do(p)
					started.Store(0)
					res.Attempts++
					if err == nil {
						res.Ok++
					} else {
						var en unix.Errno
						if errors.As(err, &en) {
							res.Errnos[unix.ErrnoName(en)]++
						} else {
							res.Errnos["other"]++
						}
					}
				}
			}
		}
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

func walkPaths(dir string, depth int) []string {
	if depth > 12 {
		return nil
	}
	names, _ := readDirNames(dir)
	var out []string
	for _, n := range names {
		p := filepath.Join(dir, n)
		out = append(out, p)
		var st unix.Stat_t
		if unix.Lstat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			out = append(out, walkPaths(p, depth+1)...)
		}
	}
	return out
}

// runHostile runs the worker on sd's mount and checks that it finished in time, that the
// daemon still serves, and that the canary did not change. It returns the attempts.
func runHostile(t *testing.T, sd *scratchDirs, d *fuseDaemon, c *canary, a hostileArgs, timeout time.Duration) hostileResult {
	t.Helper()
	a.Mnt = sd.mnt
	w := workerCmd(t, "hostile", a)
	var out, errb bytes.Buffer
	w.Stdout, w.Stderr = &out, &errb
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Wait() }()
	var res hostileResult
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("hostile worker: %v: %s", err, errb.String())
		} else if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Errorf("hostile worker output %q: %v", out.String(), err)
		}
	case <-time.After(timeout):
		t.Errorf("the hostile worker did not finish within %v (a hang): %s", timeout, errb.String())
		w.Process.Kill()
		abortConnection(sd.mnt)
		<-done
	}
	if !d.alive() {
		t.Errorf("the daemon died: %v: %s", d.err, d.out.String())
	} else if _, err := readDirNames(sd.mnt); err != nil {
		t.Errorf("the mount no longer lists its root: %v", err)
	}
	c.check(t, "after the hostile operations")
	return res
}

// hostileSymlinks is a lower layer of symlinks that point out of it in every way, at
// several depths, and the paths through them the worker tries.
func hostileSymlinks(t *testing.T, lower, canaryRoot string) []string {
	t.Helper()
	links := map[string]string{
		"abs":        "/",
		"up":         "..",
		"upup":       "../../../../../../..",
		"canaryabs":  canaryRoot,
		"canaryrel":  "../canary",
		"loop":       "loop",
		"loopa":      "loopb",
		"loopb":      "loopa",
		"d/e/abs":    "/",
		"d/e/up":     "../../..",
		"d/e/canary": "../../../canary",
		"d/selfdir":  ".",
		"d/parent":   "..",
		"d/etc":      canaryRoot + "/etc",
	}
	for n, target := range links {
		p := filepath.Join(lower, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	writeLowerFiles(t, lower, map[string]string{"d/e/f": "lower f", "plain": "plain"})
	var names []string
	for n := range links {
		names = append(names, filepath.Base(n))
	}
	sort.Strings(names)
	seen := map[string]bool{}
	var paths []string
	for _, prefix := range []string{"/", "/d/", "/d/e/", "/d/selfdir/", "/d/parent/d/", "/d/e/up/"} {
		for _, n := range names {
			for _, suffix := range []string{"", "/", "/secret", "/sub/file", "/canary/secret", "/link", "/etc/passwd", "/../canary/secret", "/x/y", "/d/e/f"} {
				p := prefix + n + suffix
				if !seen[p] {
					seen[p] = true
					paths = append(paths, p)
				}
			}
		}
	}
	return append(paths, canaryRoot, canaryRoot+"/secret", "/../canary/secret", "/../../..", "/plain/..")
}

func TestHostileLowerSymlinks(t *testing.T) {
	rounds := envCount(t, "COWFS_HOSTILE_ROUNDS", 1)
	sd := newScratch(t)
	c := newCanary(t, filepath.Join(sd.root, "canary"))
	paths := hostileSymlinks(t, sd.lower, c.root)
	lowerBefore := takeSnapshot(sd.lower, lowerDir)
	total := hostileResult{Errnos: map[string]int{}}
	start := time.Now()
	for r := 0; r < rounds && !t.Failed(); r++ {
		d := mountDaemon(t, sd.options(), sd.mnt)
		res := runHostile(t, sd, d, c, hostileArgs{Paths: paths}, 5*time.Minute)
		total.Attempts += res.Attempts
		total.Ok += res.Ok
		for k, v := range res.Errnos {
			total.Errnos[k] += v
		}
		d.stop(t)
		// Start the next round from a fresh upper.
		os.RemoveAll(sd.upper)
		os.Mkdir(sd.upper, 0o755)
	}
	if diff := diffSnapshots("before", lowerBefore, "after", takeSnapshot(sd.lower, lowerDir)); diff != "" {
		t.Errorf("the lower layer changed:\n%s", diff)
	}
	if total.Attempts == 0 {
		t.Fatal("no operation was attempted")
	}
	figure(t, "escape attempts through hostile symlinks: %d (%d paths x %d ops x %d rounds, %v), refused: %d, canary changed: %v",
		total.Attempts, len(paths), len(hostileOps), rounds, time.Since(start).Round(time.Second), total.Attempts, t.Failed())
	t.Logf("outcomes: %d succeeded inside the mount, errnos %v", total.Ok, total.Errnos)
}

// A lower (and an upper) directory swapped for a symlink to the canary and back, over
// and over, while the worker works in it: the daemon must never follow the symlink.
func TestHostileLayerDirSwappedBySymlink(t *testing.T) {
	seconds := envCount(t, "COWFS_HOSTILE_SWAP_SECONDS", 4)
	sd := newScratch(t)
	c := newCanary(t, filepath.Join(sd.root, "canary"))
	files := map[string]string{"sw/file": "lower file", "sw/sub/f2": "lower f2", "sw/secret": "lower secret", "up/file": "u"}
	writeLowerFiles(t, sd.lower, files)
	for _, dir := range []string{sd.lower, sd.upper} {
		if err := os.Symlink(c.root, filepath.Join(dir, "swlink")); err != nil {
			t.Fatal(err)
		}
	}
	d := mountDaemon(t, sd.options(), sd.mnt)
	// Copy "up" up so the upper has a directory to swap too.
	if err := os.WriteFile(filepath.Join(sd.mnt, "up/new"), []byte("n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(sd.upper, "swlink"), filepath.Join(sd.upper, "uplink")); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	swaps := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				swaps <- n
				return
			default:
			}
			// Atomic exchanges: the directory and the symlink trade names.
			unix.Renameat2(unix.AT_FDCWD, filepath.Join(sd.lower, "sw"), unix.AT_FDCWD, filepath.Join(sd.lower, "swlink"), unix.RENAME_EXCHANGE)
			unix.Renameat2(unix.AT_FDCWD, filepath.Join(sd.upper, "up"), unix.AT_FDCWD, filepath.Join(sd.upper, "uplink"), unix.RENAME_EXCHANGE)
			n++
			time.Sleep(time.Duration(n%3) * 100 * time.Microsecond)
		}
	}()
	var paths []string
	for _, p := range []string{"/sw", "/sw/file", "/sw/sub", "/sw/sub/f2", "/sw/secret", "/sw/etc/passwd", "/swlink/secret", "/up", "/up/file", "/up/new", "/up/secret", "/uplink/secret"} {
		paths = append(paths, p)
	}
	res := runHostile(t, sd, d, c, hostileArgs{Paths: paths, Seconds: seconds}, time.Duration(seconds)*time.Second+5*time.Minute)
	close(stop)
	n := <-swaps
	// Put the layers back as they were before stopping the daemon.
	d.stop(t)
	c.check(t, "after the swaps")
	figure(t, "escape attempts while a layer dir is swapped with a symlink: %d (%d swaps in %ds), refused: %d", res.Attempts, n, seconds, res.Attempts)
	t.Logf("outcomes: %d succeeded, errnos %v", res.Ok, res.Errnos)
}

// Whiteout and opaque markers in odd places: a whiteout in the top layer of an empty
// directory, opaque markers on files, a .wh. name on a directory, .wh..wh..opq as a
// directory, unknown .wh..wh. names, overlay redirect and origin xattrs pointing out of
// the layer. Listing, reading and changing everything neither hangs, crashes nor
// escapes; the markers never show.
func TestHostileOddMarkers(t *testing.T) {
	sd := newScratch(t)
	c := newCanary(t, filepath.Join(sd.root, "canary"))
	top := filepath.Join(sd.root, "top")
	if err := os.Mkdir(top, 0o755); err != nil {
		t.Fatal(err)
	}
	writeLowerFiles(t, sd.lower, map[string]string{"x/inner": "x", "od/inner": "od inner", "wd/f": "wd", "victim": "v", "r/f": "r"})
	mk := func(p string, mode uint32, dev int) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mknod(p, mode, dev); err != nil {
			t.Fatal(err)
		}
	}
	mk(filepath.Join(top, "emptyd/ghost"), unix.S_IFCHR, 0)  // a whiteout hiding nothing
	mk(filepath.Join(top, "ghost-at-root"), unix.S_IFCHR, 0) // the same at the root
	writeLowerFiles(t, top, map[string]string{"opqfile": "a file marked opaque", ".wh..wh.unknown": "?", "od/.wh..wh..opq/f": "in a marker dir"})
	for _, x := range []struct{ path, name, value string }{
		{"opqfile", "trusted.overlay.opaque", "y"},
		{"opqfile", "user.fuseoverlayfs.opaque", "y"},
		{"od", "trusted.overlay.redirect", "/../canary"},
		{"od/.wh..wh..opq/f", "trusted.overlay.origin", "garbage"},
		{"opqfile", "trusted.overlay.metacopy", ""},
		{"opqfile", "trusted.cowfs.origin", "junk"},
	} {
		if err := unix.Lsetxattr(filepath.Join(top, x.path), x.name, []byte(x.value), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(top, ".wh.x"), 0o755); err != nil { // a .wh. name on a directory
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(top, "wd/.wh.f/deeper"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/", filepath.Join(top, ".wh.victim")); err != nil { // a .wh. symlink
		t.Fatal(err)
	}
	opts := fmt.Sprintf("lowerdir=%s:%s,upperdir=%s,workdir=%s", top, sd.lower, sd.upper, sd.work)
	d := startDaemon(t, opts, sd.mnt)
	if err := d.waitMounted(20 * time.Second); err != nil {
		// Refusing such a layer outright is an answer too, if it is one clear line.
		if strings.Count(strings.TrimSpace(d.out.String()), "\n") != 0 {
			t.Errorf("refused with more than one line: %v", err)
		}
		t.Logf("cowfs refuses the layers: %v", err)
		return
	}
	var shown []string
	filepath.Walk(sd.mnt, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			rel, _ := filepath.Rel(sd.mnt, p)
			shown = append(shown, rel)
		}
		return nil
	})
	t.Logf("merged view: %q", shown)
	for _, p := range shown {
		if strings.Contains(p, ".wh..wh..opq") {
			t.Errorf("a marker shows in the merged view: %s", p)
		}
	}
	res := runHostile(t, sd, d, c, hostileArgs{Walk: true, Seconds: 1}, 5*time.Minute)
	d.stop(t)
	figure(t, "operations on odd markers: %d, refused escapes: all, daemon alive", res.Attempts)
	t.Logf("outcomes: %d succeeded, errnos %v", res.Ok, res.Errnos)
}

// Names of the maximum length (255 bytes) and a deep tree (10,000 levels in the stress
// run), built with
// mkdirat relative to directory fds (its paths exceed PATH_MAX). Walking down through
// the mount, reading, and creating at the bottom finish in bounded time, with clean
// errors where cowfs's paths are too long, and the daemon alive.
func TestHostileLongNamesAndDeepTree(t *testing.T) {
	// 4,000 levels in the default run (past PATH_MAX, which ~2,000 levels of "d/" reach);
	// the stress run walks 10,000 (each lookup opens its whole path: minutes on a loaded
	// machine).
	depth := envCount(t, "COWFS_HOSTILE_DEPTH", 4000)
	sd := newScratch(t)
	long := strings.Repeat("n", 255)
	writeLowerFiles(t, sd.lower, map[string]string{long: "long", "ld/" + long + "/" + long: "nested long"})
	if err := os.Symlink(strings.Repeat("t", 4095), filepath.Join(sd.lower, "longlink")); err != nil {
		t.Fatal(err)
	}
	// The deep tree: deep/d/d/d/.../d/bottom.
	fd, err := unix.Open(sd.lower, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i <= depth; i++ {
		name := "d"
		if i == 0 {
			name = "deep"
		}
		if err := unix.Mkdirat(fd, name, 0o755); err != nil {
			t.Fatal(err)
		}
		nfd, err := unix.Openat(fd, name, unix.O_DIRECTORY|unix.O_RDONLY, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = nfd
	}
	if err := unix.Mknodat(fd, "bottom", unix.S_IFREG|0o644, 0); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	d := mountDaemon(t, sd.options(), sd.mnt)
	m := func(p string) string { return filepath.Join(sd.mnt, p) }

	// Long names: read, copy up, remove, rename to another long name; one byte more is
	// ENAMETOOLONG.
	if b, err := os.ReadFile(m(long)); err != nil || string(b) != "long" {
		t.Errorf("read the 255-byte name: %q, %v", b, err)
	}
	if err := os.WriteFile(m("ld/"+long+"/"+long), []byte("changed"), 0o644); err != nil {
		t.Errorf("copy up a 255-byte name under a 255-byte directory: %v", err)
	}
	if err := os.Rename(m(long), m(strings.Repeat("m", 255))); err != nil {
		t.Errorf("rename a 255-byte name to another: %v", err)
	}
	if err := os.WriteFile(m(strings.Repeat("o", 256)), nil, 0o644); !errors.Is(err, unix.ENAMETOOLONG) {
		t.Errorf("create a 256-byte name: %v, want ENAMETOOLONG", err)
	}
	if target, err := os.Readlink(m("longlink")); err != nil || len(target) != 4095 {
		t.Errorf("readlink of a 4095-byte target: %d bytes, %v", len(target), err)
	}
	if names, err := readDirNames(sd.mnt); err != nil || len(names) != 4 {
		t.Errorf("root listing: %d names, %v", len(names), err)
	}

	// The deep tree: walk it with openat one level at a time and stat the bottom; then
	// create a file createDepth levels down, which copies up every directory above it
	// (each copy-up opens its parent by a path longer than PATH_MAX past ~2,000 levels).
	createDepth := envCount(t, "COWFS_HOSTILE_CREATE_DEPTH", 2500)
	walk := func(levels int, atBottom func(fd int) error) (walked int, err error) {
		fd, err := unix.Open(m("deep"), unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return 0, err
		}
		defer func() { unix.Close(fd) }()
		for ; walked < levels; walked++ {
			nfd, err := unix.Openat(fd, "d", unix.O_PATH|unix.O_DIRECTORY, 0)
			if err != nil {
				return walked, err
			}
			unix.Close(fd)
			fd = nfd
		}
		return walked, atBottom(fd)
	}
	bounded := func(what string, f func()) time.Duration {
		start := time.Now()
		done := make(chan struct{})
		go func() { defer close(done); f() }()
		select {
		case <-done:
		case <-time.After(5 * time.Minute):
			t.Fatalf("%s through the mount did not finish in 5 minutes", what)
		}
		return time.Since(start)
	}
	var walked int
	var walkErr, createErr error
	walkTime := bounded("walking the deep tree", func() {
		walked, walkErr = walk(depth, func(fd int) error {
			var st unix.Stat_t
			return unix.Fstatat(fd, "bottom", &st, unix.AT_SYMLINK_NOFOLLOW)
		})
	})
	if walked < depth || walkErr != nil {
		t.Errorf("walking down the deep tree: %d of %d levels, then %v", walked, depth, walkErr)
	}
	createTime := bounded("creating deep down", func() {
		_, createErr = walk(min(createDepth, depth), func(fd int) error {
			cfd, err := unix.Openat(fd, "created", unix.O_CREAT|unix.O_WRONLY, 0o644)
			if err == nil {
				unix.Close(cfd)
			}
			return err
		})
	})
	if createErr != nil {
		t.Errorf("create %d levels down: %v", createDepth, createErr)
	}
	figure(t, "deep tree: %d levels walked and the bottom stat'ed in %v; a file created %d levels down (copying up every directory above) in %v",
		walked, walkTime.Round(time.Millisecond), min(createDepth, depth), createTime.Round(time.Millisecond))
	if !d.alive() {
		t.Fatalf("the daemon died: %s", d.out.String())
	}
	d.stop(t)
}
