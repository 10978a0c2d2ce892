package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
