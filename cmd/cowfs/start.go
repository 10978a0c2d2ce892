package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/cowfs/cowfs/fs"
	"github.com/cowfs/cowfs/layers"
	"golang.org/x/sys/unix"
)

// daemonEnv marks the re-executed daemon; its value is the number of the file
// descriptor on which the daemon reports "ok\n" or its one-line error.
const daemonEnv = "_COWFS_DAEMON"

// start validates opts on the filesystem and mounts: in this process with -f or
// -d, in the daemon when this process is it (re-executed, or forked by earlyfork.c),
// and otherwise by starting the daemon and waiting for its report. Errors are found
// before anything is mounted.
func start(opts layers.Options) error {
	opts, err := opts.Abs()
	if err != nil {
		return err
	}
	if fdEnv, ok := os.LookupEnv(daemonEnv); ok {
		// The parent checked the same options a moment ago (about 1 ms of the
		// daemon's start, on the path of every mount).
		os.Unsetenv(daemonEnv)
		fd, err := strconv.Atoi(fdEnv)
		if err != nil || fd <= 2 {
			return fmt.Errorf("bad %s=%q", daemonEnv, fdEnv)
		}
		return runDaemon(opts, fd)
	}
	if err := opts.Check(); err != nil {
		return err // forked early or not, the error goes to the caller's stderr
	}
	if opts.Foreground {
		return serve(opts, func(error) {})
	}
	if fd := earlyReportFD(); fd >= 0 {
		// earlyfork.c forked this process before the runtime started: it is the
		// daemon already, and its parent waits for the report.
		if _, err := unix.Setsid(); err != nil {
			return fmt.Errorf("setsid: %w", err)
		}
		return runDaemon(opts, fd)
	}
	return spawnDaemon()
}

// serve mounts, calls ready with the outcome once the kernel handshake is done (or
// has failed), and serves until the filesystem is unmounted from outside or a
// SIGTERM, SIGINT or SIGHUP unmounts it (libfuse's fuse_set_signal_handlers).
func serve(opts layers.Options, ready func(error)) error {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	// The callers' umasks are applied by the kernel before a mode reaches the
	// filesystem; the daemon's own must not apply a second time.
	syscall.Umask(0)
	defer startProfiles()()
	// No GC cycle while mounting, nor in the mount's first moments: the few MiB the
	// mount allocates (FUSE buffers, the lookup cache) are all live and put the heap at
	// Go's first goal (4 MiB), so the first requests would start a cycle that frees
	// nothing and takes CPU from the container starting on the mount (mount, `ls` and
	// umount: 44.5, 45.9, 47.4 and 49.2 ms with it, 41.1, 37.7, 45.1 and 47.7 without;
	// bench mount-ls-umount, 9 runs each, alternated). A memory limit bounds the heap
	// meanwhile.
	gc := daemonGCPercent(os.Getenv("GOGC"), debug.SetGCPercent(-1))
	limit := debug.SetMemoryLimit(-1) // GOMEMLIMIT's, or none
	debug.SetMemoryLimit(min(limit, gcQuietLimit))
	restoreGC := func() {
		debug.SetMemoryLimit(limit)
		debug.SetGCPercent(gc)
	}
	m, err := fs.Mount(opts)
	if err != nil {
		restoreGC()
	} else {
		time.AfterFunc(gcQuietFor, restoreGC)
		time.AfterFunc(programPagesKeptFor, func() {
			if _, err := dropProgramPages(); err != nil && opts.Debug {
				fmt.Fprintf(os.Stderr, "cowfs: program pages kept: %v\n", err)
			}
		})
	}
	ready(err)
	if err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		m.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-sigs:
		if err := m.Unmount(); err != nil {
			return fmt.Errorf("unmount %q: %w", opts.Mountpoint, err)
		}
		return nil
	}
}

// daemonGOGC is the daemon's GC percent unless GOGC is set. The heap of a daemon that
// walked a big tree is mostly its nodes (about 42 MB live after the benchmark's 49,450
// files), and Go's default of 100 lets the heap grow to twice that before collecting:
// peak RSS after the walk 72.2-75.3 MiB, against 62.2-64.2 MiB at 50 (fuse-overlayfs
// 54.1). The collections this adds cost little in the benchmark's rows (two alternated
// runs each, cowfs/fuse-overlayfs, 50 against 100): cold find 0.72, 0.75 against 0.92,
// 0.75; cold ls -lR 0.76, 1.17 against 1.02, 0.87; 50,000 getxattr 1.17, 0.95 against
// 1.02, 0.99; chmod volatile 0.76, 0.70 against 0.68, 0.80; re-reads 0.95, 0.77
// against 0.92, 0.95. Untar of 20,000 files, which makes as many
// nodes, may pay up to a tenth: 1.21, 1.14 against 0.83, 1.10 (cowfs's medians 12.6 and
// 12.4 s against 11.4 and 11.5 s). (At 97b6a47, when a cold find still made a node for
// every file, 50 cost that find 6 %.)
const daemonGOGC = 50

// daemonGCPercent is the GC percent the daemon runs with: the environment's GOGC, which
// the runtime has applied already (current), or daemonGOGC.
func daemonGCPercent(env string, current int) int {
	if env != "" {
		return current
	}
	return daemonGOGC
}

// The mount's first moments without GC (serve): how long, and the heap that starts
// a cycle anyway.
const (
	gcQuietFor   = 200 * time.Millisecond
	gcQuietLimit = 64 << 20
)

// errDaemonDied is the parent's error when the daemon exits without a report.
var errDaemonDied = errors.New("the daemon exited before mounting")
