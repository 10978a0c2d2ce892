package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// fsKind is one of the filesystems compared.
type fsKind int

const (
	kernelFS      fsKind = iota // kernel overlayfs, the baseline
	fuseOverlayFS               // fuse-overlayfs, the FUSE baseline
	cowFS                       // cowfs, measured
)

// allKinds is the order in which each run visits the filesystems.
func allKinds() []fsKind { return []fsKind{kernelFS, fuseOverlayFS, cowFS} }

func (k fsKind) String() string {
	switch k {
	case kernelFS:
		return "kernel"
	case fuseOverlayFS:
		return "fuse-overlayfs"
	}
	return "cowfs"
}

// runDir is one run's fresh upper, work and mount directories, on the filesystem of
// the layers (kernel overlayfs needs upper and work on one filesystem).
type runDir struct {
	base, upper, work, mnt string
}

func runsDir(cfg *config) string { return filepath.Join(cfg.cache, "runs") }

func newRunDir(cfg *config, name string) (*runDir, error) {
	base := filepath.Join(runsDir(cfg), name)
	if err := os.RemoveAll(base); err != nil {
		return nil, err
	}
	rd := &runDir{base, filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "mnt")}
	for _, d := range []string{rd.upper, rd.work, rd.mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	return rd, nil
}

// remove deletes the run directory, unless something is still mounted on it (then
// deleting would go through the mount), then writes the deletion back and drops the
// page cache.
//
// Without that, the next run's creations pay for this run's deletions, on this
// machine's ext4, which has no journal: ext4 then refuses to reuse an inode deleted
// less than 60 s (300 s if its table block is dirty) ago while that block is cached
// (fs/ext4/ialloc.c, recently_deleted), so every inode allocation scans past the
// thousands just freed. 2,000 metacopy chmods on kernel overlayfs took 0.18 s after
// a clean start and 0.95-1.15 s right after a deleted run; the cost is the same for
// every filesystem measured, so it hid the differences between them. A journaled
// ext4 never does this check.
func (rd *runDir) remove() error {
	if isMounted(rd.mnt) {
		return fmt.Errorf("%s is still mounted; left in place", rd.mnt)
	}
	if err := os.RemoveAll(rd.base); err != nil {
		return err
	}
	return dropPageCache()
}

// cleanStaleRuns unmounts and deletes what an interrupted earlier run left.
func cleanStaleRuns(cfg *config) error {
	ents, err := os.ReadDir(runsDir(cfg))
	if err != nil {
		return nil // nothing yet
	}
	for _, e := range ents {
		mnt := filepath.Join(runsDir(cfg), e.Name(), "mnt")
		if isMounted(mnt) {
			log.Printf("unmounting %s, left by an earlier run", mnt)
			if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil {
				return fmt.Errorf("umount -l %s: %v: %s", mnt, err, out)
			}
		}
	}
	return os.RemoveAll(runsDir(cfg))
}

// isMounted tells whether dir is a mount point (in /proc/self/mountinfo).
func isMounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) > 4 && unescapeMountinfo(f[4]) == dir {
			return true
		}
	}
	return false
}

func unescapeMountinfo(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// mounted is a live mount of the stack.
type mounted struct {
	kind fsKind
	mnt  string
	pid  int // the FUSE daemon; 0 for the kernel
}

// env is what a workload sees: the stack, the run's directories and its mount.
type env struct {
	cfg      *config
	st       *stack
	rd       *runDir
	m        *mounted // nil for workloads that mount by themselves
	kind     fsKind
	volatile bool // mount without fsync (kernel and cowfs: the volatile option)
	metacopy bool // mount with metacopy=on (kernel and cowfs)
}

// path is rel inside the mount.
func (e *env) path(rel string) string { return filepath.Join(e.rd.mnt, rel) }

// mountArgv is the command that mounts the stack for e.
func mountArgv(e *env) []string {
	lowers := slices.Clone(e.st.Layers)
	slices.Reverse(lowers) // lowerdir lists the topmost first
	opts := "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + e.rd.upper + ",workdir=" + e.rd.work
	switch e.kind {
	case kernelFS:
		if e.metacopy {
			opts += ",redirect_dir=on,index=off,metacopy=on" // metacopy needs redirect_dir=on
		} else {
			opts += ",redirect_dir=off,index=off,metacopy=off"
		}
		if e.volatile {
			opts += ",volatile"
		}
		return []string{"mount", "-t", "overlay", "overlay", "-o", opts, e.rd.mnt}
	case fuseOverlayFS:
		// fuse-overlayfs never fsyncs a copy-up: one mode for both.
		return []string{"fuse-overlayfs", "-o", opts, e.rd.mnt}
	}
	if e.volatile {
		opts += ",volatile"
	}
	if e.metacopy {
		opts += ",metacopy=on"
	}
	return []string{e.cfg.cowfs, "-o", opts, e.rd.mnt}
}

// mountStack mounts the stack on e's run directory; it returns once the mount is live.
func mountStack(ctx context.Context, e *env) (*mounted, error) {
	argv := mountArgv(e)
	if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mount %s: %v: %s", e.kind, err, bytes.TrimSpace(out))
	}
	m := &mounted{kind: e.kind, mnt: e.rd.mnt}
	if !isMounted(m.mnt) {
		return nil, fmt.Errorf("mount %s: %s is not a mount point after the command returned", e.kind, m.mnt)
	}
	if e.kind != kernelFS {
		m.pid = daemonPID(m.mnt)
		if m.pid == 0 {
			err := fmt.Errorf("mount %s: no daemon process found for %s", e.kind, m.mnt)
			return nil, errors.Join(err, m.unmount())
		}
	}
	return m, nil
}

// daemonPID finds the FUSE daemon serving mnt: the process with mnt as its last
// argument (the mount point ends both programs' command lines).
func daemonPID(mnt string) int {
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		if len(args) > 1 && args[len(args)-1] == mnt {
			return pid
		}
	}
	return 0
}

// unmount unmounts (retrying while busy, then detaching lazily) and waits for the
// daemon to exit; a daemon still alive after 10 s is killed and that is an error.
func (m *mounted) unmount() error {
	var err error
	for i := 0; i < 50; i++ {
		var out []byte
		if out, err = exec.Command("umount", m.mnt).CombinedOutput(); err == nil {
			break
		}
		err = fmt.Errorf("umount %s: %v: %s", m.mnt, err, bytes.TrimSpace(out))
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		if out, lerr := exec.Command("umount", "-l", m.mnt).CombinedOutput(); lerr != nil {
			return fmt.Errorf("%w; umount -l: %v: %s", err, lerr, out)
		}
	}
	return errors.Join(err, m.waitDaemon())
}

// waitDaemon waits for the FUSE daemon to exit after the unmount.
func (m *mounted) waitDaemon() error {
	if m.pid == 0 {
		return nil
	}
	for i := 0; i < 200; i++ {
		if !alive(m.pid) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	if p, err := os.FindProcess(m.pid); err == nil {
		_ = p.Kill()
	}
	return fmt.Errorf("%s daemon %d still running 10 s after the unmount; killed", m.kind, m.pid)
}

// alive tells whether pid is a live (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// peakRSS is VmHWM of pid, in MiB.
func peakRSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest) // "12345 kB"
			kb, err := strconv.ParseFloat(f[0], 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

func syncFS() error {
	if out, err := exec.Command("sync").CombinedOutput(); err != nil {
		return fmt.Errorf("sync: %v: %s", err, out)
	}
	return nil
}

// dropCaches empties the page cache, dentries and inodes, for a cold figure.
func dropCaches() error { return dropCachesOf("3") }

// dropPageCache writes everything back and empties the page cache, the block
// device's included (so its cached inode table blocks), keeping dentries and inodes.
func dropPageCache() error { return dropCachesOf("1") }

func dropCachesOf(what string) error {
	if err := syncFS(); err != nil {
		return err
	}
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte(what+"\n"), 0o644)
}
