package layers

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"github.com/cowfs/cowfs/internal/sysx"
	"golang.org/x/sys/unix"
)

// mountinfoPath lists the mounts seen by this process (proc(5), /proc/pid/mountinfo).
const mountinfoPath = "/proc/self/mountinfo"

// sameFilesystem compares the st_dev of two paths.
func sameFilesystem(a, b string) (bool, error) {
	var sa, sb unix.Stat_t
	if err := unix.Stat(a, &sa); err != nil {
		return false, fmt.Errorf("stat %q: %w", a, err)
	}
	if err := unix.Stat(b, &sb); err != nil {
		return false, fmt.Errorf("stat %q: %w", b, err)
	}
	return sa.Dev == sb.Dev, nil
}

// writable reports, as an error, why this process may not create files in dir.
func writable(dir string) error {
	return unix.Access(dir, unix.W_OK|unix.X_OK)
}

// isMountpoint reports whether the resolved path is the mount point of a mount
// listed in /proc/self/mountinfo.
func isMountpoint(path string) (bool, error) {
	f, err := os.Open(mountinfoPath)
	if err != nil {
		return false, fmt.Errorf("reading the mount table: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		if sysx.UnescapeMountinfo(fields[4]) == path {
			return true, nil
		}
	}
	if err := sc.Err(); err != nil {
		return false, fmt.Errorf("reading the mount table: %w", err)
	}
	return false, nil
}
