// Package fs is the FUSE node tree of cowfs: the only package that imports go-fuse. It
// turns each request into calls on lookup/ (where a name lives), copyup/ (bring an object
// into the upper layer before it changes) and whiteout/ (hide a lower name).
package fs

import (
	"bytes"
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cowfs/cowfs/copyup"
	"github.com/cowfs/cowfs/layers"
	"github.com/cowfs/cowfs/lookup"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// kernelTimeout is how long the kernel may cache entries, attributes and negative
// lookups. Only this daemon changes the layers (lower layers are immutable), and the
// kernel updates its caches from the replies to its own requests, so it can be long.
const kernelTimeout = time.Hour

// lookupCacheEntries bounds the lookup cache. The kernel keeps what it looked up for
// kernelTimeout, so the daemon sees a name again only after the kernel dropped it or
// the directory changed (which makes a new generation anyway): a small cache answers
// those. An entry costs about 370 bytes in ristretto; 65,536 of them were 28 MB of the
// 74 MB live heap after walking 49,411 files, for almost no hits.
const lookupCacheEntries = 1 << 12

// overlayFS is the state shared by all nodes of one mount.
type overlayFS struct {
	stack *layers.Stack
	res   *lookup.Resolver
	cache *lookup.Cache
	cp    *copyup.Copier // nil when read-only
	reap  *reaper        // nil when read-only (reap.go)
	root  *node
	// anonFds holds, for each node of an unnamed O_TMPFILE file (node.anon), an fd of
	// it (int), so it can be linked into place.
	anonFds sync.Map
	// copying holds the nodes being copied up, each with a channel closed when its
	// copy-up ends (lockCopy); guarded by copyingMu.
	copyingMu sync.Mutex
	copying   map[*node]chan struct{}
	// lists interns the nodes' layer lists (intern.go).
	lists *layerLists
	// nextGen numbers the generations of directories (dirState.gen).
	nextGen atomic.Uint64
	// listings are the directory snapshots readers are in the middle of.
	listings listings
	// walks tells, per process, whether its listings carry the files' attributes
	// (walk.go; atomic slots, no lock).
	walks walkTable
	// data is the data path negotiated at INIT (passthrough.go); set before the mount.
	data dataPath
	// regen maps an object's (inode number, generation) to the generation of the node
	// that replaced its node (repoint, passthrough.go); regenNext numbers them. Both
	// guarded by regenMu.
	regenMu   sync.Mutex
	regen     map[[2]uint64]uint64
	regenNext uint64
	// anyRegen is set at the first repoint (atomic, read without regenMu).
	anyRegen atomic.Bool
	// xattrsAsked is when the kernel last made the daemon read an object's attributes
	// (Unix nanoseconds; see preloadXattrs).
	xattrsAsked atomic.Int64
	// selinuxUnsupported: a getxattr of security.selinux on an object without one is
	// EOPNOTSUPP, not ENODATA (set before the mount, then only read; see Getxattr).
	selinuxUnsupported bool
	// passthrough: backing files may be registered (set once the probe after the mount
	// succeeded; until then files go through the daemon).
	passthrough atomic.Bool
	// backing says which layers' files the kernel takes as backing files (passthrough.go);
	// set before passthrough is, then only read (its own state is atomic).
	backing *backingLayers
	// dirEpoch counts the requests that removed, replaced or moved an upper directory;
	// dirOps is how many RENAME and RMDIR requests are in progress (both atomic, no
	// lock); dirRing the nodes that keep an upper directory fd (dirfd.go).
	dirEpoch atomic.Uint64
	dirOps   atomic.Int64
	dirRing  *dirRing
	// lowerDirs holds, by node, the fds of a directory's lower copies it keeps, and
	// lowerRing those nodes (lowerfd.go; a sync.Map).
	lowerDirs sync.Map
	lowerRing *dirRing
	// flux holds, by request (its cancel channel), the directories whose name change
	// ends once go-fuse has moved its nodes (flux.go; a sync.Map).
	flux sync.Map
	// orphans holds, by node, an O_PATH fd of an upper file renamed over while the
	// kernel knew it (flux.go; a sync.Map).
	orphans sync.Map
}

// Mounted is a live cowfs mount.
type Mounted struct {
	srv  *fuse.Server
	ofs  *overlayFS
	mnt  string
	done chan struct{}
}

// Mount opens the layers in opts (which Check has validated), mounts the merged tree at
// opts.Mountpoint, and returns once the kernel handshake is done.
func Mount(opts layers.Options) (*Mounted, error) {
	// The kernel applies the caller's umask before it sends a mode; the daemon's own
	// umask must not apply a second time.
	syscall.Umask(0)
	stack, err := layers.Open(opts)
	if err != nil {
		return nil, err
	}
	ofs, err := newOverlayFS(stack)
	if err != nil {
		stack.Close()
		return nil, err
	}
	ofs.selinuxUnsupported = !opts.SELinuxENODATA && !selinuxEnabled()
	// The root shows the number of its topmost lower copy, like every merged directory.
	rootLayer := 0
	if stack.Writable && len(stack.Layers) > 1 {
		rootLayer = 1
	}
	rootSt, err := ofs.statIn(rootLayer, "")
	if err != nil {
		ofs.close()
		return nil, fmt.Errorf("stat root: %w", err)
	}
	rootIno := lookup.MapIno(stack, rootLayer, rootSt.Ino)
	to := kernelTimeout
	source := opts.Source
	if source == "" {
		source = "cowfs"
	}
	mo := fuse.MountOptions{
		FsName:               source,
		Name:                 "cowfs",
		AllowOther:           opts.AllowOther || os.Geteuid() == 0,
		DirectMount:          os.Geteuid() == 0,
		MaxWrite:             1 << 20,
		ExtraCapabilities:    fuse.CAP_HANDLE_KILLPRIV_V2 | fuse.CAP_ATOMIC_O_TRUNC,
		EnableSymlinkCaching: true,
		// POSIX ACLs: the kernel checks them (default_permissions alone looks at the
		// mode bits only) and caches them per inode, for those checks and for
		// getxattr: `ls -l` reads system.posix_acl_access and security.selinux of
		// every entry, and only the second reaches the daemon once the entry is
		// known (64,000 of the 76,500 requests of a second `ls -lR` of the bench
		// tree, Linux 6.18, until Getxattr answered EOPNOTSUPP for a missing label).
		EnableAcl: !opts.NoACL,
		Debug:     opts.Debug,
		Options:   []string{"default_permissions"},
	}
	if opts.ReadOnly || !stack.Writable {
		mo.Options = append(mo.Options, "ro")
	}
	tryPT, whyNot := choosePassthrough(stack)
	setDataPath(&mo, tryPT)
	switch {
	case tryPT:
		ofs.data = dataPassthrough
	case mo.ExtraCapabilities&fuse.CAP_WRITEBACK_CACHE != 0:
		ofs.data = dataWriteback
	}
	// A container rootfs needs device nodes and set-id programs to work, as on kernel
	// overlayfs; go-fuse would default to nodev,nosuid. Only root may ask for them.
	for _, f := range []struct {
		on      bool
		yes, no string
	}{{opts.NoDev, "nodev", "dev"}, {opts.NoSuid, "nosuid", "suid"}, {opts.NoExec, "noexec", "exec"}} {
		switch {
		case f.on:
			mo.Options = append(mo.Options, f.yes)
		case os.Geteuid() == 0:
			mo.Options = append(mo.Options, f.no)
		}
	}
	// The SELinux label of every file: only a kernel with SELinux knows the option (it
	// refuses the mount otherwise); elsewhere it means nothing (fuse-overlayfs
	// accepts it and always drops it).
	contextIgnored := false
	if opts.Context != "" {
		if selinuxEnabled() {
			mo.Options = append(mo.Options, "context="+opts.Context)
		} else {
			contextIgnored = true
		}
	}
	if opts.Debug {
		mo.Logger = log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)
		if f := stack.Format; stack.Writable && len(f.Fallbacks) > 0 {
			mo.Logger.Printf("cowfs: unprivileged fallbacks: %s", strings.Join(f.Fallbacks, "; "))
		}
		if contextIgnored {
			mo.Logger.Printf("cowfs: context=%q ignored: SELinux is not enabled", opts.Context)
		}
	}
	gopts := &gofs.Options{
		MountOptions:    mo,
		EntryTimeout:    &to,
		AttrTimeout:     &to,
		NegativeTimeout: &to,
		RootStableAttr:  &gofs.StableAttr{Ino: rootIno},
		// A mode of 0000 is a mode like any other (go-fuse would show 0644).
		NullPermissions: true,
	}
	srv, err := mount(opts.Mountpoint, ofs.root, gopts)
	if err != nil {
		ofs.close()
		return nil, fmt.Errorf("mount %q: %w", opts.Mountpoint, err)
	}
	if tryPT {
		if err := probePassthrough(srv); err != nil {
			ofs.data, whyNot = dataPlain, err.Error()
		} else {
			var logf func(string, ...any)
			if mo.Logger != nil {
				logf = mo.Logger.Printf
			}
			ofs.backing = newBackingLayers(srv, len(ofs.stack.Layers), logf)
			ofs.passthrough.Store(true)
		}
	}
	if err := raiseReadahead(opts.Mountpoint, mo.MaxWrite); err != nil && mo.Logger != nil {
		mo.Logger.Printf("cowfs: readahead stays at the kernel's default: %v", err)
	}
	if mo.Logger != nil {
		if whyNot != "" {
			mo.Logger.Printf("cowfs: data path %s (no passthrough: %s)", ofs.data, whyNot)
		} else {
			mo.Logger.Printf("cowfs: data path %s", ofs.data)
		}
	}
	m := &Mounted{srv: srv, ofs: ofs, mnt: opts.Mountpoint, done: make(chan struct{})}
	go func() {
		srv.Wait()
		ofs.close()
		close(m.done)
	}()
	return m, nil
}

// selinuxEnabled reports whether the kernel runs SELinux: it registers selinuxfs only
// then, and /proc/filesystems is the same in every namespace (a container may not have
// /sys/fs/selinux mounted); where /proc is not readable, a mounted selinuxfs says so.
func selinuxEnabled() bool {
	if b, err := os.ReadFile("/proc/filesystems"); err == nil {
		return selinuxfsListed(b)
	}
	_, err := os.Stat("/sys/fs/selinux/enforce")
	return err == nil
}

// selinuxfsListed reports whether a /proc/filesystems text lists selinuxfs.
func selinuxfsListed(b []byte) bool {
	for line := range bytes.Lines(b) {
		f := bytes.Fields(line)
		if len(f) > 0 && string(f[len(f)-1]) == "selinuxfs" {
			return true
		}
	}
	return false
}

// mount is go-fuse's fs.Mount without its last step. fuse.NewServer returns once the
// filesystem is mounted and the INIT handshake is done; fs.Mount then calls WaitMount,
// which runs go-fuse's "poll hack": the daemon opens a file in its own mount and polls it,
// so that the kernel learns early that POLL is not implemented. That request from the
// daemon to itself is a trap: killed at that moment, the daemon cannot exit (the thread
// in the open waits uninterruptibly for an answer that only the dying process could
// give, and the FUSE device is not closed until every thread has exited), leaving a
// zombie and a mount that only /sys/fs/fuse/connections/N/abort frees. cowfs never opens
// files in its own mount, which is the only case the hack protects (Go's netpoller
// taking the last thread while the daemon polls its own file); a POLL from any other
// process is answered ENOSYS by go-fuse (doPoll), after which the kernel stops asking.
func mount(dir string, root *node, opts *gofs.Options) (*fuse.Server, error) {
	srv, err := fuse.NewServer(newSchedFS(rawFS{gofs.NewNodeFS(root, opts), root.ofs}, &root.ofs.walks), dir, &opts.MountOptions)
	if err != nil {
		return nil, err
	}
	// Not at once: more Ps make the runtime start more threads, and a clone is dear
	// here; raised at mount, a mount, `ls` and umount took 54-59 ms instead of 47-51
	// (bench mount-ls-umount, 7 runs). The per-request gain is for sustained traffic.
	time.AfterFunc(raiseProcsAfter, raiseProcs)
	go srv.Serve()
	return srv, nil
}

func newOverlayFS(stack *layers.Stack) (*overlayFS, error) {
	cache, err := lookup.NewCache(lookupCacheEntries)
	if err != nil {
		return nil, fmt.Errorf("lookup cache: %w", err)
	}
	ofs := &overlayFS{stack: stack, cache: cache, res: lookup.New(stack, cache)}
	budget := dirFdBudget()
	ofs.dirRing = newDirRing(budget, func(n *node) { n.dropUpperFD(nil) })
	lowers := len(stack.Layers)
	if stack.Writable {
		lowers-- // the upper's fds are dirRing's
	}
	ofs.lowerRing = newDirRing(budget/max(lowers, 1), ofs.dropLower)
	if stack.Writable {
		ofs.cp = copyup.New(stack)
		ofs.reap = newReaper(stack.Work)
	}
	ofs.lists = newLayerLists(len(stack.Layers))
	ofs.copying = make(map[*node]chan struct{})
	all := make([]int, len(stack.Layers))
	for i := range all {
		all[i] = i
	}
	ofs.root = &node{ofs: ofs, layers: ofs.internLayers(all), ds: ofs.newDirState()}
	return ofs, nil
}

func (o *overlayFS) close() {
	if o.reap != nil {
		o.reap.close()
	}
	o.dirRing.close()
	o.lowerRing.close()
	o.cache.Close()
	o.stack.Close()
}

// Wait blocks until the filesystem is unmounted.
func (m *Mounted) Wait() { <-m.done }

// Unmount unmounts the filesystem. If the kernel does not let go within a few seconds
// (another mount namespace holds the mount, or a caller is stuck), it detaches lazily so
// the daemon never hangs on exit.
func (m *Mounted) Unmount() error {
	errc := make(chan error, 1)
	go func() { errc <- m.srv.Unmount() }()
	select {
	case err := <-errc:
		if err == nil {
			return nil
		}
	case <-time.After(5 * time.Second):
	}
	// EINVAL: no longer mounted here (only another namespace holds the connection,
	// which ends when this process exits).
	if err := unix.Unmount(m.mnt, unix.MNT_DETACH); err != nil && err != unix.EINVAL {
		return fmt.Errorf("unmount %q: %w", m.mnt, err)
	}
	return nil
}
