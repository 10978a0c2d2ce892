package fs

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/cowfs/cowfs/internal/sysx"
	"github.com/cowfs/cowfs/layers"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The data path: how file contents travel between a process and a layer file.
//
//   - passthrough: the kernel reads and writes the upper file itself (FUSE passthrough,
//     Linux 6.9+, needs CAP_SYS_ADMIN in the initial user namespace). Only files open on
//     their upper copy are passed through (and every file of a read-only mount, which
//     never copies up): the kernel fixes one backing file per inode for as long as a
//     passthrough file is open on it, and a read-only fd open on a lower file must move
//     to the upper copy after a copy-up (kernel ovl_real_fdget), which a backing file
//     cannot do. Lower files are read through the daemon into the page cache.
//   - writeback: the kernel keeps written pages in its cache and sends them in large
//     writes later (FUSE writeback cache); it then owns size and mtime, and O_APPEND.
//     The kernel refuses passthrough on a connection with writeback cache, so this is
//     the data path when passthrough is not allowed.
//   - plain: every write goes to the daemon (write-through); only when the passthrough
//     probe fails after the mount (the INIT reply cannot be taken back).
type dataPath int

const (
	dataPlain dataPath = iota
	dataWriteback
	dataPassthrough
)

func (d dataPath) String() string {
	return [...]string{"plain", "writeback", "passthrough"}[d]
}

// DataPathEnv forces a data path ("passthrough", "writeback", "plain") for tests and
// measurements; passthrough still needs the privileges.
const DataPathEnv = "COWFS_DATAPATH"

// Filesystem types that stack on another filesystem (their s_stack_depth is at least 1):
// a backing file on them exceeds the kernel's stacking limit for a FUSE passthrough mount.
const (
	overlayfsMagic = 0x794c7630
	fuseMagic      = 0x65735546
	ecryptfsMagic  = 0xf15f
)

// choosePassthrough says whether the mount should try passthrough, and if not, why.
func choosePassthrough(stack *layers.Stack) (bool, string) {
	switch os.Getenv(DataPathEnv) {
	case "writeback", "plain":
		return false, DataPathEnv + "=" + os.Getenv(DataPathEnv)
	}
	if os.Geteuid() != 0 {
		return false, "not root"
	}
	if !initialUserNS() {
		return false, "in a user namespace"
	}
	if !kernelAtLeast(6, 9) {
		return false, "kernel older than 6.9"
	}
	// Checked here: the upper layer, or on a read-only mount every layer. A writable
	// mount's lower layers are checked at their first passed-through file
	// (backingLayers), so that one that stacks does not cost the others passthrough.
	check := []int{layers.Upper}
	if !stack.Writable {
		check = check[:0]
		for i := range stack.Layers {
			check = append(check, i)
		}
	}
	for _, li := range check {
		var st unix.Statfs_t
		if err := unix.Fstatfs(stack.Layers[li].Root, &st); err != nil {
			return false, fmt.Sprintf("statfs layer %d: %v", li, err)
		}
		switch st.Type {
		case overlayfsMagic, fuseMagic, ecryptfsMagic:
			return false, fmt.Sprintf("layer %d is on a stacked filesystem (type %#x)", li, st.Type)
		}
	}
	return true, ""
}

// initialUserNS reports whether the process runs in the initial user namespace, where
// root's capabilities are real (the kernel's check for passthrough is capable()).
func initialUserNS() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295"
}

func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	rel := string(u.Release[:bytes.IndexByte(u.Release[:], 0)])
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

// setDataPath sets the INIT capabilities for the chosen data path.
func setDataPath(mo *fuse.MountOptions, passthrough bool) {
	if passthrough {
		// Writes to a passed-through file never reach the daemon, so it could not
		// clear set-ID bits for the kernel: the kernel keeps that job (and asks for
		// security.capability before writes).
		mo.ExtraCapabilities &^= fuse.CAP_HANDLE_KILLPRIV_V2
		return // go-fuse asks for CAP_PASSTHROUGH itself
	}
	mo.DisabledCapabilities |= fuse.CAP_PASSTHROUGH
	if os.Getenv(DataPathEnv) != "plain" {
		mo.ExtraCapabilities |= fuse.CAP_WRITEBACK_CACHE
	}
}

// probePassthrough checks, once the mount is up, that the kernel registers a backing
// file: it granted passthrough in INIT and lets this process use it. The probe file is
// a memfd (a regular file on a filesystem that does not stack; the layers were checked
// for stacking before the mount).
func probePassthrough(srv *fuse.Server) error {
	if srv.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH == 0 {
		return fmt.Errorf("the kernel does not offer it")
	}
	fd, err := unix.MemfdCreate("cowfs-passthrough-probe", unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("probe file: %w", err)
	}
	defer unix.Close(fd)
	id, errno := srv.RegisterBackingFd(&fuse.BackingMap{Fd: int32(fd)})
	if errno != 0 {
		return fmt.Errorf("register a backing file: %w", errno)
	}
	srv.UnregisterBackingFd(id)
	return nil
}

// backingLayers says, layer by layer, whether the kernel takes the layer's files as
// backing files. choosePassthrough checks the upper layer before the mount (and every
// layer of a read-only mount), but on a writable mount lower files are passed through
// too, and a lower layer may be on a filesystem that stacks (overlayfs, or a FUSE mount
// that passes through itself): the kernel refuses its files (ELOOP, the stacking limit).
// go-fuse takes one refusal for "no passthrough on this mount" and then passes nothing
// through, upper files included, without a word. So the first file of each layer to be
// passed through is registered once here, and a layer the kernel refuses has its files
// go through the daemon, with a debug line; the others keep passthrough.
type backingLayers struct {
	// try registers and unregisters fd as a backing file.
	try func(fd int) error
	// logf prints a debug line (nil without -d).
	logf func(format string, args ...any)
	// state, by layer index: backingUntried, backingTaken or backingRefused (atomic;
	// set once from untried, by whichever open tries first).
	state []atomic.Int32
}

const (
	backingUntried = iota
	backingTaken
	backingRefused
)

func newBackingLayers(srv *fuse.Server, nlayers int, logf func(string, ...any)) *backingLayers {
	return &backingLayers{
		try: func(fd int) error {
			id, errno := srv.RegisterBackingFd(&fuse.BackingMap{Fd: int32(fd)})
			if errno != 0 {
				return errno
			}
			srv.UnregisterBackingFd(id)
			return nil
		},
		logf:  logf,
		state: make([]atomic.Int32, nlayers),
	}
}

// takes reports whether files of layer li can be passed through; fd is an open file of
// it, registered once to find out.
func (b *backingLayers) takes(li, fd int) bool {
	switch b.state[li].Load() {
	case backingTaken:
		return true
	case backingRefused:
		return false
	}
	err := b.try(fd)
	st := int32(backingTaken)
	if err != nil {
		st = backingRefused
	}
	if b.state[li].CompareAndSwap(backingUntried, st) && err != nil && b.logf != nil {
		b.logf("cowfs: layer %d: files go through the daemon (the kernel refuses them as passthrough backing files: %v)", li, err)
	}
	return b.state[li].Load() == backingTaken
}

// raiseReadahead lets the kernel read ahead as much as one FUSE read carries (1 MiB
// instead of 128 KiB): a sequential read of a lower file, which goes through the
// daemon, then costs an eighth of the round trips. The FUSE INIT reply can only lower
// the readahead of the connection's bdi; root can raise it in sysfs.
func raiseReadahead(mnt string, maxRead int) error {
	if os.Geteuid() != 0 {
		return nil
	}
	dev, err := mountDev(mnt)
	if err != nil {
		return err
	}
	p := fmt.Sprintf("/sys/class/bdi/%s/read_ahead_kb", dev)
	return os.WriteFile(p, []byte(strconv.Itoa(maxRead>>10)), 0)
}

// mountDev is the "major:minor" of the filesystem mounted at mnt, read from
// /proc/self/mountinfo. Never a stat of the mount: a request from the daemon to its own
// mount is a trap (killed while it waits, the daemon can never exit; see mount).
func mountDev(mnt string) (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	dev := ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && sysx.UnescapeMountinfo(f[4]) == mnt {
			dev = f[2] // the last match is the topmost mount
		}
	}
	if dev == "" {
		return "", fmt.Errorf("%s is not in /proc/self/mountinfo", mnt)
	}
	return dev, nil
}

// repoint gives the object of node n a new node at its next lookup (admit): the same
// inode number with a generation no layer produces (top bit set), so go-fuse makes a
// new node, with no backing file. Objects only move up, so an object is repointed at
// most once a node.
func (o *overlayFS) repoint(n *node) {
	n.mu.Lock()
	n.superseded = true
	n.mu.Unlock()
	a := n.StableAttr()
	o.regenMu.Lock()
	defer o.regenMu.Unlock()
	k := [2]uint64{a.Ino, a.Gen}
	if _, ok := o.regen[k]; !ok {
		if o.regen == nil {
			o.regen = map[[2]uint64]uint64{}
		}
		o.regenNext++
		o.regen[k] = 1<<63 | o.regenNext
		o.anyRegen.Store(true)
	}
}

// repointed reports whether node n was replaced by a new node (repoint). Asked on
// every GETATTR: the node's own flag, not the mount's map and lock.
func (n *node) repointed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.superseded
}

// regenOf is the generation of the newest node of the object a lookup found as (ino, gen).
// Asked on every lookup: nothing to look at until a first repoint.
func (o *overlayFS) regenOf(ino, gen uint64) uint64 {
	if !o.anyRegen.Load() {
		return gen
	}
	o.regenMu.Lock()
	defer o.regenMu.Unlock()
	for {
		g, ok := o.regen[[2]uint64{ino, gen}]
		if !ok {
			return gen
		}
		gen = g
	}
}
