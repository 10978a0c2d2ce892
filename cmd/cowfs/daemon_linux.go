package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/cowfs/cowfs/layers"
	"golang.org/x/sys/unix"
)

// selfExe is the running binary, re-executed as the daemon when it was built without
// cgo (earlyfork.c forks before the runtime otherwise; Go cannot fork): by its
// real path, so the daemon's process name is "cowfs" (ps, pgrep) rather than "exe";
// through /proc/self/exe when that path is gone (the binary was replaced meanwhile).
func selfExe() string {
	if p, err := os.Executable(); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "/proc/self/exe"
}

// readyOK is the daemon's report that the filesystem is mounted.
const readyOK = "ok"

// spawnDaemon re-executes this binary with the same arguments in a new session,
// with a pipe as file descriptor 3, and waits for the daemon's report: "ok" makes
// this process exit 0; a one-line error is this process's error.
//
// Through syscall.ForkExec, not os/exec: the first os.StartProcess of a process
// checks that the kernel's pidfd calls work, by cloning a child that exits at once,
// 1.3-1.6 ms of the 55 ms of a mount, `ls` and umount on this machine.
func spawnDaemon() error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("starting the daemon: %w", err)
	}
	defer r.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		w.Close()
		return fmt.Errorf("starting the daemon: %w", err)
	}
	const reportFD = 3 // after stdin, stdout, stderr
	pid, err := syscall.ForkExec(selfExe(), os.Args, &syscall.ProcAttr{
		Env: append(os.Environ(), fmt.Sprintf("%s=%d", daemonEnv, reportFD)),
		// Stdin and stdout are /dev/null from the start; stderr stays ours until
		// the daemon reports, for a crash message, and the daemon then lets go of it.
		Files: []uintptr{null.Fd(), null.Fd(), os.Stderr.Fd(), w.Fd()},
		// A new session from the first instruction on: no terminal, and a ^C meant
		// for this process does not reach the daemon.
		Sys: &syscall.SysProcAttr{Setsid: true},
	})
	null.Close()
	w.Close()
	if err != nil {
		return fmt.Errorf("starting the daemon: %w", err)
	}
	line, _ := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSuffix(line, "\n")
	if line == readyOK {
		return nil // the daemon's parent becomes init once this process exits
	}
	// The daemon exits 1 after reporting an error, or died before: reap it.
	var ws syscall.WaitStatus
	for {
		_, err = syscall.Wait4(pid, &ws, 0, nil)
		if err != syscall.EINTR {
			break
		}
	}
	switch {
	case line != "":
		return reportedError(line)
	case err != nil:
		return fmt.Errorf("%w: %w", errDaemonDied, err)
	case ws.Signaled():
		return fmt.Errorf("%w: signal: %v", errDaemonDied, ws.Signal())
	case ws.Exited() && ws.ExitStatus() != 0:
		return fmt.Errorf("%w: exit status %d", errDaemonDied, ws.ExitStatus())
	}
	return errDaemonDied
}

// reportedError is the daemon's one-line error, printed by the parent as its own.
type reportedError string

func (e reportedError) Error() string { return string(e) }

// runDaemon is the daemon's side, re-executed or forked early: it mounts, reports to
// fd, lets go of every inherited file descriptor and serves until unmounted.
func runDaemon(opts layers.Options, fd int) error {
	unix.CloseOnExec(fd)
	report := os.NewFile(uintptr(fd), "cowfs-report")
	// Close what the caller let leak to us (file descriptors without close-on-exec)
	// now, before the FUSE device (opened without close-on-exec) exists.
	if err := closeInherited(fd); err != nil {
		return reportAndExit(report, err)
	}
	if err := redirect([]int{0, 1}); err != nil {
		return reportAndExit(report, err)
	}
	// Like libfuse's fuse_daemonize: do not keep the caller's directory busy (its
	// filesystem could not be unmounted). The paths in opts are absolute.
	if err := os.Chdir("/"); err != nil {
		return reportAndExit(report, fmt.Errorf("chdir /: %w", err))
	}
	reported := false
	err := serve(opts, func(err error) {
		reported = true
		if err != nil {
			_ = reportAndExit(report, err)
			return
		}
		_, werr := report.WriteString(readyOK + "\n")
		report.Close()
		if werr != nil {
			return
		}
		if !opts.Debug {
			_ = redirect([]int{2})
		}
	})
	if err != nil && reported {
		// Either reported already, or there is nobody left to tell.
		return errReported
	}
	return err
}

// reportAndExit sends err to the parent on one line and closes the pipe; the
// daemon then exits 1 without printing it again.
func reportAndExit(report *os.File, err error) error {
	fmt.Fprintln(report, oneLine(err))
	report.Close()
	return errReported
}

// redirect points the given standard file descriptors at /dev/null.
func redirect(fds []int) error {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", os.DevNull, err)
	}
	defer null.Close()
	for _, fd := range fds {
		if err := unix.Dup2(int(null.Fd()), fd); err != nil {
			return fmt.Errorf("redirecting fd %d to %s: %w", fd, os.DevNull, err)
		}
	}
	return nil
}

// closeInherited closes every file descriptor above stderr, except keep, that has
// no close-on-exec flag: Go opens all its own with the flag, so these are the ones
// inherited from whoever started cowfs (a waiting pipe would otherwise never see
// end-of-file).
func closeInherited(keep int) error {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("listing open files: %w", err)
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 2 || fd == keep {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC != 0 {
			// Gone (the directory's own descriptor), or one of Go's.
			continue
		}
		unix.Close(fd)
	}
	return nil
}
