package store

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/cowfs/cowfs/internal/sysx"
	"github.com/cowfs/cowfs/whiteout"
	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// Change kinds, as `podman diff` prints them.
const (
	Added   = 'A'
	Changed = 'C'
	Deleted = 'D'
)

// Change is one changed path of a container ("/etc/hosts").
type Change struct {
	Kind byte
	Path string
}

func (c Change) String() string { return string(c.Kind) + " " + c.Path }

// Diff lists what container name changed, from its upper directory: a whiteout is a
// deletion (D) of what it hides; an entry that a lower layer also has is a change (C),
// anything else an addition (A), everything below an added directory included. An
// opaque directory lists the lower children it hides as D and its own as A.
func (s *Store) Diff(name string) ([]Change, error) {
	var upper string
	var lowers []string
	err := s.view(func(m *metadata) error {
		c, ok := m.Containers[name]
		if !ok {
			return fmt.Errorf("no container %s", name)
		}
		upper = s.UpperDir(*c)
		var err error
		lowers, err = s.lowersLocked(m, c)
		return err
	})
	if err != nil {
		return nil, err
	}
	d := &differ{}
	defer d.close()
	for _, l := range lowers {
		fd, err := unix.Open(l, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", l, err)
		}
		d.lowers = append(d.lowers, fd)
	}
	fd, err := unix.Open(upper, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("upper of %s: %w", name, err)
	}
	dir := os.NewFile(uintptr(fd), upper)
	defer dir.Close()
	if err := d.walk(dir, "", false, false); err != nil {
		return nil, err
	}
	sort.Slice(d.changes, func(i, j int) bool { return d.changes[i].Path < d.changes[j].Path })
	return d.changes, nil
}

type differ struct {
	lowers  []int // O_PATH fds of the lower roots, topmost first
	changes []Change
}

func (d *differ) close() {
	for _, fd := range d.lowers {
		unix.Close(fd)
	}
}

func (d *differ) add(kind byte, rel string) {
	d.changes = append(d.changes, Change{Kind: kind, Path: "/" + rel})
}

// upperEntries splits a directory of an upper layer into real entries and the names
// its whiteouts hide.
func upperEntries(dir *os.File) (entries map[string]unix.Stat_t, whiteouts []string, marks whiteout.DirMarks, err error) {
	dirfd := int(dir.Fd())
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return nil, nil, marks, err
	}
	if marks, err = whiteout.ReadDirMarks(dirfd, ""); err != nil {
		return nil, nil, marks, err
	}
	entries = map[string]unix.Stat_t{}
	hidden := map[string]bool{}
	for _, n := range names {
		if target, ok := whiteout.Target(n); ok {
			if !whiteout.IsInternalName(target) {
				hidden[target] = true
			}
			continue
		}
		if whiteout.IsInternalName(n) {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(dirfd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return nil, nil, marks, err
		}
		if whiteout.IsCharWhiteout(&st) ||
			(marks.XattrWhiteouts && st.Mode&unix.S_IFMT == unix.S_IFREG && whiteout.IsXattrWhiteout(dirfd, n)) {
			hidden[n] = true
			continue
		}
		entries[n] = st
	}
	for n := range hidden {
		if _, ok := entries[n]; !ok { // a real entry wins over a stray .wh. file
			whiteouts = append(whiteouts, n)
		}
	}
	return entries, whiteouts, marks, nil
}

// walk reports the changes in the upper directory dir at rel; allNew: nothing below
// comes from a lower layer; replaces: dir is an opaque directory over a lower one,
// whose children it hides.
func (d *differ) walk(dir *os.File, rel string, allNew, replaces bool) error {
	entries, whiteouts, _, err := upperEntries(dir)
	if err != nil {
		return fmt.Errorf("diff of %q: %w", "/"+rel, err)
	}
	if replaces {
		for _, c := range d.lowerChildren(rel) {
			if _, ok := entries[c]; !ok {
				d.add(Deleted, sysx.Join(rel, c))
			}
		}
	}
	if !allNew {
		for _, n := range whiteouts {
			if p := sysx.Join(rel, n); d.lowerHas(p) {
				d.add(Deleted, p)
			}
		}
	}
	for n, st := range entries {
		p := sysx.Join(rel, n)
		inLower := !allNew && d.lowerHas(p)
		kind := byte(Added)
		if inLower {
			kind = Changed
		}
		d.add(kind, p)
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		fd, err := unix.Openat(int(dir.Fd()), n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("diff of %q: %w", "/"+p, err)
		}
		sub := os.NewFile(uintptr(fd), p)
		marks, err := whiteout.ReadDirMarks(fd, "")
		if err == nil {
			err = d.walk(sub, p, !inLower || marks.Opaque, inLower && marks.Opaque)
		}
		sub.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// lowerHas reports whether the merged lower layers show path p: some layer has it, and
// no layer above hides it (a whiteout of it or of a parent, a non-directory parent, an
// opaque parent). The one-loop merge rule of lookup.Resolver, per path.
func (d *differ) lowerHas(p string) bool {
	comps := strings.Split(p, "/")
	for _, root := range d.lowers {
		opaqueAbove := false
		for i, name := range comps {
			fd, err := sysx.OpenBeneath(root, strings.Join(comps[:i], "/"), unix.O_PATH|unix.O_DIRECTORY, 0)
			if err != nil {
				break
			}
			found, hides, opaque := lowerEntry(fd, name, i == len(comps)-1)
			unix.Close(fd)
			switch {
			case hides:
				return false
			case found && i == len(comps)-1:
				return true
			case !found:
			default:
				opaqueAbove = opaqueAbove || opaque
				continue
			}
			break
		}
		if opaqueAbove {
			return false
		}
	}
	return false
}

// lowerEntry looks at name in one lower directory: found (an entry that is a directory,
// or anything when last), hides (a whiteout, or a non-directory on the way), opaque.
func lowerEntry(dirfd int, name string, last bool) (found, hides, opaque bool) {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		ok, _ := whiteout.HasWhiteoutFile(dirfd, name)
		return false, ok, false
	}
	if whiteout.IsCharWhiteout(&st) {
		return false, true, false
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		if marks, err := whiteout.ReadDirMarks(dirfd, ""); err == nil && marks.XattrWhiteouts && whiteout.IsXattrWhiteout(dirfd, name) {
			return false, true, false
		}
	}
	if last {
		return true, false, false
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return false, true, false
	}
	marks, err := whiteout.ReadDirMarks(dirfd, name)
	return true, false, err == nil && marks.Opaque
}

// lowerChildren lists the names the merged lower layers show in directory p.
func (d *differ) lowerChildren(p string) []string {
	seen := map[string]bool{}
	var out []string
	for _, root := range d.lowers {
		fd, err := sysx.OpenBeneath(root, p, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			continue
		}
		f := os.NewFile(uintptr(fd), p)
		names, _ := f.Readdirnames(-1)
		f.Close()
		for _, n := range names {
			if whiteout.IsInternalName(n) || seen[n] {
				continue
			}
			seen[n] = true
			if d.lowerHas(sysx.Join(p, n)) {
				out = append(out, n)
			}
		}
	}
	sort.Strings(out)
	return out
}

// Commit turns container name's upper directory into a new layer (the canonical OCI
// tar of it, WriteTar) and records an image stacking it on the container's image,
// named imageName (or the first 12 digits of its ID). The layer's digest is the
// sha256 of that tar, which `layer export` writes back. Refused while mounted.
func (s *Store) Commit(name, imageName string) (Image, Layer, error) {
	c, err := s.Container(name)
	if err != nil {
		return Image{}, Layer{}, err
	}
	if mounted, err := Mounted(c); err != nil || mounted {
		if err == nil {
			err = fmt.Errorf("container %s is mounted: unmount it before committing", name)
		}
		return Image{}, Layer{}, err
	}
	release, err := s.busy()
	if err != nil {
		return Image{}, Layer{}, err
	}
	defer release()
	f, err := os.CreateTemp(s.path(tmpDir), "commit-")
	if err != nil {
		return Image{}, Layer{}, fmt.Errorf("store: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	h := sha256.New()
	if err := WriteTar(io.MultiWriter(f, h), s.UpperDir(c)); err != nil {
		return Image{}, Layer{}, err
	}
	want := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Image{}, Layer{}, fmt.Errorf("store: %w", err)
	}
	l, err := s.ImportLayer(f, ImportOptions{Check: func(got digest.Digest) error {
		if got != want {
			return fmt.Errorf("commit of %s: the layer read back as %s, written as %s", name, got, want)
		}
		return nil
	}})
	if err != nil {
		return Image{}, Layer{}, err
	}
	var img Image
	err = s.update(func(m *metadata) error {
		base, ok := m.Images[c.Image]
		if !ok {
			return fmt.Errorf("container %s: no image %s", name, c.Image)
		}
		layers := append(append([]digest.Digest{}, base.Layers...), l.Digest)
		id := configID(layers)
		if imageName == "" {
			imageName = id.Encoded()[:12]
		}
		img, err = addImageLocked(m, imageName, id, layers)
		return err
	})
	return img, l, err
}
