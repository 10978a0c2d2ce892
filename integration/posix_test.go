package integration

import (
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// posixSkips are posixtest checks that cannot pass on an overlay, with the
// reason.
var posixSkips = map[string]string{
	"FcntlFlockLocksFile": "expects a second F_SETLK from the same process to conflict, but POSIX record locks " +
		"belong to the process; it fails on kernel overlayfs and on ext4 too",
}

// TestPosix runs go-fuse's posixtest checks against a fresh mount with an
// empty lower and upper, on the FUSE program and, for reference, on the
// kernel.
func TestPosix(t *testing.T) {
	requireMounts(t)
	names := make([]string, 0, len(posixtest.All))
	for n := range posixtest.All {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		fn := posixtest.All[name]
		t.Run(name, func(t *testing.T) {
			for _, kind := range []mountKind{kernelKind, fuseKind} {
				t.Run(string(kind), func(t *testing.T) {
					if why, ok := posixSkips[name]; ok {
						t.Skip(why)
					}
					m := newTestMount(t, kind, layer{}, layer{})
					fn(t, m.dir)
				})
			}
		})
	}
}
