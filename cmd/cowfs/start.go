package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"

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
	// No GC cycle while mounting: the few MiB the mount allocates (FUSE buffers, the
	// lookup cache) would start one that only delays the "ok".
	gc := debug.SetGCPercent(-1)
	m, err := fs.Mount(opts)
	debug.SetGCPercent(gc)
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

// errDaemonDied is the parent's error when the daemon exits without a report.
var errDaemonDied = errors.New("the daemon exited before mounting")
