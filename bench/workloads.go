package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// workload is one row of the table. prepare runs on the mounted stack outside the
// timer; measure returns the figure (seconds of its command, or MiB).
type workload struct {
	name      string
	what      string // one line for the results file
	unit      string // "s" or "MiB"
	cold      bool   // caches are dropped between prepare and measure
	volatile  bool   // mounted without fsync (kernel and cowfs)
	metacopy  bool   // mounted with metacopy=on (kernel and cowfs; fuse-overlayfs has none)
	selfMount bool   // measure mounts and unmounts by itself
	kernelNA  bool   // not applicable to the kernel (no daemon)
	prepare   func(context.Context, *env) error
	measure   func(context.Context, *env) (float64, error)
}

func workloads(cfg *config) []*workload {
	find := func(e *env) []string { return []string{"find", e.rd.mnt} }
	lsR := func(e *env) []string { return []string{"ls", "-lR", e.rd.mnt} }
	tarDir := func(e *env) []string { return []string{"tar", "-cf", "-", "-C", e.rd.mnt, e.st.TarDir} }
	seq := func(e *env) []string {
		return []string{"dd", "if=" + e.path(e.st.ReadFile), "of=/dev/null", "bs=1M"}
	}
	big := fmt.Sprintf("%d MiB", cfg.bigSize>>20)
	ws := []*workload{
		{name: "walk-find-cold", what: "`find MNT` after a fresh mount and dropped caches", cold: true, measure: timedArgv(find)},
		{name: "walk-find-warm", what: "`find MNT`, second time on the mount", prepare: untimedArgv(find), measure: timedArgv(find)},
		{name: "walk-ls-lR-cold", what: "`ls -lR MNT` after a fresh mount and dropped caches", cold: true, measure: timedArgv(lsR)},
		{name: "walk-ls-lR-warm", what: "`ls -lR MNT`, second time on the mount", prepare: untimedArgv(lsR), measure: timedArgv(lsR)},
		{name: "stat-all-warm", what: "lstat(2) of every file of the merged tree (from a list), after one untimed pass", prepare: untimedFunc(statAll), measure: timedFunc(statAll)},
		{name: "reread-small-warm", what: fmt.Sprintf("read each of %d small lower files spread over the tree as `os.ReadFile` does "+
			"(open, fstat, read to the end, close), after one untimed pass: warm re-reads, as of headers in a build", cfg.chmodFiles),
			prepare: func(_ context.Context, e *env) error { return readAll(smallFiles(e)) }, measure: rereadSmall},
		{name: "tar-small-cold", what: "`tar -cf - -C MNT usr/share` into a pipe (reads every small file), caches dropped", cold: true, measure: timedArgv(tarDir)},
		{name: "seqread-cold", what: "`dd bs=1M` of a " + big + " file of the bottom layer to /dev/null, caches dropped", cold: true, measure: timedArgv(seq)},
		{name: "seqread-warm", what: "the same read, after one untimed read on the mount", prepare: untimedArgv(seq), measure: timedArgv(seq)},
		{name: "roundtrip-getxattr", what: fmt.Sprintf("lgetxattr(2) of a name the file lacks (`user.cowfs-bench`) on one lower file, %d times in a row, "+
			"after one untimed call: a round trip each to a FUSE daemon, which FUSE does not cache (a diagnostic row, not one of issue 5's workloads)", cfg.roundtrips),
			prepare: untimedFunc(getxattrs(1)), measure: timedFunc(getxattrs(cfg.roundtrips))},
		{name: "roundtrip-spaced", what: fmt.Sprintf("the same lgetxattr(2), %d times, each %v after the previous one returned (the caller sleeps), "+
			"timing the calls alone: the round trip of a caller that waits on something else between requests (a diagnostic row)", cfg.roundtrips/25, spacedPause),
			prepare: untimedFunc(getxattrs(1)), measure: spacedGetxattrs(cfg.roundtrips / 25)},
	}
	for _, volatile := range []bool{false, true} {
		mode, how := "durable", "kernel default, fuse-overlayfs, cowfs default"
		if volatile {
			mode, how = "volatile", "kernel and cowfs `-o volatile`, fuse-overlayfs as is"
		}
		ws = append(ws,
			&workload{name: "copyup-append-" + mode, volatile: volatile,
				what:    "open(O_APPEND), write 1 byte, close: copy-up of a " + big + " lower file (" + how + ")",
				measure: timedFunc(appendByte)},
			&workload{name: "copyup-chmod-" + mode, volatile: volatile,
				what:    fmt.Sprintf("chmod(2) of %d lower files, each a copy-up (%s)", cfg.chmodFiles, how),
				measure: chmodMany})
	}
	ws = append(ws, &workload{name: "copyup-chmod-metacopy", metacopy: true,
		what: fmt.Sprintf("chmod(2) of %d lower files, each a metadata-only copy-up (kernel and cowfs `-o metacopy=on`, "+
			"the kernel with the redirect_dir=on it requires; fuse-overlayfs, which has no metacopy, copies the data)", cfg.chmodFiles),
		measure: chmodMany})
	untar := func(e *env) []string { return []string{"tar", "-xf", e.st.Archive, "-C", e.path("untar")} }
	rmrf := func(e *env) []string { return []string{"rm", "-rf", e.path("untar")} }
	mkdirUntar := func(_ context.Context, e *env) error { return os.Mkdir(e.path("untar"), 0o755) }
	ws = append(ws,
		&workload{name: "create-untar", what: fmt.Sprintf("`tar -xf` of %d small files into a new directory of the mount", cfg.untarFiles),
			prepare: mkdirUntar, measure: timedArgv(untar)},
		&workload{name: "create-rm-rf", what: "`rm -rf` of that unpacked directory (unpacked outside the timer)",
			prepare: func(ctx context.Context, e *env) error {
				if err := mkdirUntar(ctx, e); err != nil {
					return err
				}
				return untimedArgv(untar)(ctx, e)
			},
			measure: timedArgv(rmrf)},
		&workload{name: "fio-randrw-4k",
			what: fmt.Sprintf("fio psync 4 KiB random read/write (50%%), %d MiB of I/O on a %d MiB file copied up outside the timer",
				cfg.fioIO>>20, cfg.fioSize>>20),
			prepare: func(_ context.Context, e *env) error {
				now := time.Now()
				return os.Chtimes(e.path(e.st.FioFile), now, now) // utimes copies up
			},
			measure: timedArgv(func(e *env) []string {
				return []string{"fio", "--name=randrw", "--filename=" + e.path(e.st.FioFile), "--rw=randrw",
					"--rwmixread=50", "--bs=4k", "--ioengine=psync", fmt.Sprintf("--size=%d", e.cfg.fioSize),
					fmt.Sprintf("--io_size=%d", e.cfg.fioIO), "--randrepeat=1", "--norandommap",
					"--output-format=terse"}
			})},
		&workload{name: "mount-ls-umount", what: "mount, `ls MNT`, umount (until umount returns), after one untimed cycle",
			selfMount: true, measure: mountCycle,
			// The untimed cycle reads the program and its libraries back into the page
			// cache, which every run's cleanup empties (runDir.remove).
			prepare: func(ctx context.Context, e *env) error { _, err := mountCycle(ctx, e); return err }},
		&workload{name: "peak-rss-after-walk", unit: "MiB", kernelNA: true,
			what: "VmHWM of the daemon after `ls -lR MNT` and an lstat of every file",
			prepare: func(ctx context.Context, e *env) error {
				if err := untimedArgv(lsR)(ctx, e); err != nil {
					return err
				}
				return statAll(e)
			},
			measure: func(_ context.Context, e *env) (float64, error) { return peakRSS(e.m.pid) }},
	)
	for _, w := range ws {
		if w.unit == "" {
			w.unit = "s"
		}
	}
	return ws
}

// selectWorkloads keeps the workloads named in only (names or prefixes, comma-separated).
func selectWorkloads(ws []*workload, only string) ([]*workload, error) {
	if only == "" {
		return ws, nil
	}
	var out []*workload
	for _, pat := range strings.Split(only, ",") {
		n := len(out)
		for _, w := range ws {
			if strings.HasPrefix(w.name, strings.TrimSpace(pat)) {
				out = append(out, w)
			}
		}
		if len(out) == n {
			return nil, fmt.Errorf("-only %q: no workload starts with %q (see -list)", only, pat)
		}
	}
	return out, nil
}

// runCmd runs argv with its output discarded (through a pipe, so tar really reads)
// and its error output kept for the error.
func runCmd(ctx context.Context, argv []string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout = io.Discard
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
		return fmt.Errorf("%s: %v: %s", strings.Join(argv[:1], " "), err, msg)
	}
	return nil
}

func untimedArgv(argv func(*env) []string) func(context.Context, *env) error {
	return func(ctx context.Context, e *env) error { return runCmd(ctx, argv(e)) }
}

// timedArgv times the command alone: wall-clock from its start to its exit.
func timedArgv(argv func(*env) []string) func(context.Context, *env) (float64, error) {
	return func(ctx context.Context, e *env) (float64, error) {
		a := argv(e)
		t0 := time.Now()
		err := runCmd(ctx, a)
		return time.Since(t0).Seconds(), err
	}
}

func untimedFunc(f func(*env) error) func(context.Context, *env) error {
	return func(_ context.Context, e *env) error { return f(e) }
}

func timedFunc(f func(*env) error) func(context.Context, *env) (float64, error) {
	return func(_ context.Context, e *env) (float64, error) {
		t0 := time.Now()
		err := f(e)
		return time.Since(t0).Seconds(), err
	}
}

func statAll(e *env) error {
	var st unix.Stat_t
	for _, rel := range e.st.Files {
		if err := unix.Lstat(e.path(rel), &st); err != nil {
			return fmt.Errorf("lstat %s: %w", rel, err)
		}
	}
	return nil
}

// getxattrs asks n times in a row for an extended attribute that the big lower
// file lacks (ENODATA on all three filesystems). Not security.selinux: where SELinux
// does not run, cowfs answers EOPNOTSUPP for a missing label (fs/xattr.go).
func getxattrs(n int) func(*env) error {
	return func(e *env) error {
		p := e.path(e.st.ReadFile)
		buf := make([]byte, 256)
		for range n {
			if err := getAbsentXattr(p, buf); err != nil {
				return err
			}
		}
		return nil
	}
}

// getAbsentXattr is one call of getxattrs: it wants ENODATA.
func getAbsentXattr(p string, buf []byte) error {
	if _, err := unix.Lgetxattr(p, absentXattr, buf); err != unix.ENODATA {
		return fmt.Errorf("lgetxattr %s %s: %v, want ENODATA", p, absentXattr, err)
	}
	return nil
}

// spacedPause is how long roundtrip-spaced sleeps between two calls.
const spacedPause = time.Millisecond

// spacedGetxattrs makes n getxattrs(1) calls, each spacedPause after the previous one
// returned, and returns the time spent in the calls alone. A sleeping caller leaves its
// CPU idle, where a busy one (a compiler between two opens) keeps it: with a busy loop
// instead of the sleep, both daemons took about 100 µs a call on the 2-CPU benchmark
// machine (the reply always wakes a thread on the other CPU), so the row would not tell
// them apart.
func spacedGetxattrs(n int) func(context.Context, *env) (float64, error) {
	return func(_ context.Context, e *env) (float64, error) {
		p := e.path(e.st.ReadFile)
		buf := make([]byte, 256)
		var in time.Duration
		for range n {
			time.Sleep(spacedPause)
			t0 := time.Now()
			err := getAbsentXattr(p, buf)
			in += time.Since(t0)
			if err != nil {
				return 0, err
			}
		}
		return in.Seconds(), nil
	}
}

// absentXattr is the attribute getxattrs asks for.
const absentXattr = "user.cowfs-bench"

func appendByte(e *env) error {
	f, err := os.OpenFile(e.path(e.st.AppendFile), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write([]byte{'x'}); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// smallFiles is cfg.chmodFiles regular lower files spread over the tree (never the big
// files, never symlinks), as paths in the mount.
func smallFiles(e *env) []string {
	var small, paths []string
	for _, rel := range e.st.Regular {
		if !strings.HasPrefix(rel, "big/") {
			small = append(small, rel)
		}
	}
	for _, rel := range sample(small, e.cfg.chmodFiles) {
		paths = append(paths, e.path(rel))
	}
	return paths
}

// readAll reads each of paths with os.ReadFile.
func readAll(paths []string) error {
	for _, p := range paths {
		if _, err := os.ReadFile(p); err != nil {
			return err
		}
	}
	return nil
}

// rereadSmall times readAll of smallFiles; choosing the files is outside the timer.
func rereadSmall(_ context.Context, e *env) (float64, error) {
	paths := smallFiles(e)
	t0 := time.Now()
	err := readAll(paths)
	return time.Since(t0).Seconds(), err
}

// chmodMany times chmod(2) of smallFiles (chmod would follow a symlink out of the
// mount), each a copy-up.
func chmodMany(_ context.Context, e *env) (float64, error) {
	paths := smallFiles(e)
	t0 := time.Now()
	for _, p := range paths {
		if err := unix.Chmod(p, 0o640); err != nil {
			return 0, fmt.Errorf("chmod %s: %w", p, err)
		}
	}
	return time.Since(t0).Seconds(), nil
}

// mountCycle times a mount, the first listing of its root and the unmount (until
// umount returns); finding the daemon and waiting for its exit are outside the timer.
func mountCycle(ctx context.Context, e *env) (float64, error) {
	argv := mountArgv(e)
	t0 := time.Now()
	if err := runCmd(ctx, argv); err != nil {
		return 0, fmt.Errorf("mount %s: %w", e.kind, err)
	}
	mountTime := time.Since(t0)
	m := &mounted{kind: e.kind, mnt: e.rd.mnt}
	if e.kind != kernelFS {
		m.pid = daemonPID(m.mnt)
	}
	t1 := time.Now()
	lsErr := runCmd(ctx, []string{"ls", e.rd.mnt})
	out, err := exec.Command("umount", m.mnt).CombinedOutput()
	d := mountTime + time.Since(t1)
	if err != nil {
		return 0, fmt.Errorf("umount: %v: %s (then: %v)", err, bytes.TrimSpace(out), m.unmount())
	}
	if err := m.waitDaemon(); err != nil {
		return 0, err
	}
	return d.Seconds(), lsErr
}
