package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cowfs/cowfs/internal/sysx"
)

// describeProc says what each thread of process pid is doing (state, kernel wait channel,
// system call), for a daemon that outlives its unmount.
func describeProc(pid int) string {
	var b strings.Builder
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, task := range tasks {
		stat, _ := os.ReadFile(filepath.Join(task, "stat"))
		wchan, _ := os.ReadFile(filepath.Join(task, "wchan"))
		sc, _ := os.ReadFile(filepath.Join(task, "syscall"))
		st := string(stat)
		if i := strings.LastIndexByte(st, ')'); i >= 0 && i+3 < len(st) {
			st = st[i+2 : i+3]
		}
		fields := strings.Fields(string(sc))
		if len(fields) > 0 {
			sc = []byte(fields[0])
		}
		fmt.Fprintf(&b, " [%s %s %s syscall=%s]", filepath.Base(task), st, wchan, sc)
	}
	return b.String()
}

// heldElsewhere finds a copy of the FUSE mount that daemon pid serves (its mountpoint is
// the last argument of its command line) in another process's mount namespace: a mount
// namespace made while the mount existed (unshare -m, podman, bwrap, a parallel test)
// keeps the connection alive after the unmount here, and the daemon rightly keeps
// serving it. It returns that process and the mount's device number ("major:minor").
func heldElsewhere(pid int) (holder int, dev string, ok bool) {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return 0, "", false
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	dir := args[len(args)-1]
	self, _ := os.Readlink("/proc/self/ns/mnt")
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		ns, err := os.Readlink(p + "/ns/mnt")
		if err != nil || ns == self {
			continue
		}
		mi, err := os.ReadFile(p + "/mountinfo")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(mi), "\n") {
			f := strings.Fields(line)
			if len(f) > 4 && sysx.UnescapeMountinfo(f[4]) == dir && strings.Contains(line, " - fuse") {
				h, _ := strconv.Atoi(filepath.Base(p))
				return h, f[2], true
			}
		}
	}
	return 0, "", false
}

// abortHeldConnection aborts the FUSE connection of device dev ("major:minor").
func abortHeldConnection(dev string) {
	if i := strings.IndexByte(dev, ':'); i >= 0 {
		os.WriteFile("/sys/fs/fuse/connections/"+dev[i+1:]+"/abort", []byte("1"), 0)
	}
}
