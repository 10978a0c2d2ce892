// Package store is cowfs's content-addressed layer store: layers (extracted trees named
// by the sha256 of their uncompressed tar, the OCI diff ID), images (stacks of layers)
// and containers (an image plus a writable upper and a work directory), the way the
// Docker and containers/storage drivers keep them (shared/reference, "Images and
// layers"). A layer is stored once however many images use it.
//
// On disk, under the store root:
//
//	lock            flock(2)ed around every read-modify-write of metadata.json
//	metadata.json   the layer, image and container records (written atomically)
//	layers/HEX/     a layer's tree, in the overlay format the mount reads (a lowerdir)
//	containers/ID/  a container's upper/ and work/
//	tmp/            imports in progress (renamed into layers/ on success)
//
// Lock order: the store lock (an flock of "lock") is taken for one metadata
// transaction at a time and never held across an extraction or a mount; tmp/.busy is
// held shared by every import in progress, and only an exclusive holder empties tmp/.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// Names of the store's entries (see the package doc).
const (
	lockName       = "lock"
	metaName       = "metadata.json"
	layersDir      = "layers"
	containersDir  = "containers"
	tmpDir         = "tmp"
	busyName       = ".busy"
	metaVersion    = 1
	upperSubdir    = "upper"
	workSubdir     = "work"
	defaultRootDir = "/var/lib/cowfs"
)

// Layer is the record of one stored layer.
type Layer struct {
	// Digest is the sha256 of the uncompressed tar the layer came from (its diff ID).
	Digest digest.Digest `json:"digest"`
	// TreeDigest is the sha256 of the canonical tar of the stored tree (what
	// `layer export` writes and `layer verify` re-hashes). Equal to Digest for layers
	// made by cowfs (directory imports, commits).
	TreeDigest digest.Digest `json:"treeDigest"`
	// Size is the bytes of the layer's non-directory entries (hard links once).
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
}

// Image is a named stack of layers.
type Image struct {
	Name string `json:"name"`
	// ID is the digest of the image's OCI config.
	ID digest.Digest `json:"id"`
	// Layers are the diff IDs, bottom first (as in an OCI config's rootfs.diff_ids).
	Layers  []digest.Digest `json:"layers"`
	Created time.Time       `json:"created"`
}

// Container is an image plus a writable layer.
type Container struct {
	Name    string    `json:"name"`
	ID      string    `json:"id"`
	Image   string    `json:"image"`
	Created time.Time `json:"created"`
}

// metadata is the content of metadata.json.
type metadata struct {
	Version    int                   `json:"version"`
	Layers     map[string]*Layer     `json:"layers"`     // by digest
	Images     map[string]*Image     `json:"images"`     // by name
	Containers map[string]*Container `json:"containers"` // by name
}

// Store is an opened store root.
type Store struct {
	// Root is the store's directory (absolute).
	Root string
}

// DefaultRoot is the store of the current user: /var/lib/cowfs for root, else
// $XDG_DATA_HOME/cowfs or ~/.local/share/cowfs.
func DefaultRoot() (string, error) {
	if os.Geteuid() == 0 {
		return defaultRootDir, nil
	}
	if d := os.Getenv("XDG_DATA_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "cowfs"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no store root: %w", err)
	}
	return filepath.Join(home, ".local", "share", "cowfs"), nil
}

// Open opens (creating if needed) the store at root.
func Open(root string) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("store root %q: %w", root, err)
	}
	for _, d := range []string{abs, filepath.Join(abs, layersDir), filepath.Join(abs, containersDir), filepath.Join(abs, tmpDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	// The layer trees are lowers of mounts that other users may be allowed to use.
	if err := os.Chmod(filepath.Join(abs, layersDir), 0o711); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return &Store{Root: abs}, nil
}

func (s *Store) path(elem ...string) string {
	return filepath.Join(append([]string{s.Root}, elem...)...)
}

// LayerDir is the directory of the stored layer d (which must be valid).
func (s *Store) LayerDir(d digest.Digest) string {
	return s.path(layersDir, d.Encoded())
}

// lock takes the store lock (exclusive or shared) and returns its release.
func (s *Store) lock(exclusive bool) (func(), error) {
	f, err := os.OpenFile(s.path(lockName), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store lock: %w", err)
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("store lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// load reads metadata.json (an empty store when it does not exist yet).
func (s *Store) load() (*metadata, error) {
	m := &metadata{Version: metaVersion}
	data, err := os.ReadFile(s.path(metaName))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("store metadata: %w", err)
	default:
		if err := json.Unmarshal(data, m); err != nil {
			return nil, fmt.Errorf("store metadata %s: %w", s.path(metaName), err)
		}
		if m.Version != metaVersion {
			return nil, fmt.Errorf("store metadata %s: version %d, want %d", s.path(metaName), m.Version, metaVersion)
		}
	}
	if m.Layers == nil {
		m.Layers = map[string]*Layer{}
	}
	if m.Images == nil {
		m.Images = map[string]*Image{}
	}
	if m.Containers == nil {
		m.Containers = map[string]*Container{}
	}
	return m, nil
}

// saveLocked writes m atomically: a temporary file, fsync, rename, fsync of the root.
func (s *Store) saveLocked(m *metadata) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("store metadata: %w", err)
	}
	f, err := os.CreateTemp(s.Root, metaName+".tmp-*")
	if err != nil {
		return fmt.Errorf("store metadata: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.path(metaName))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store metadata: %w", err)
	}
	return syncDir(s.Root)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// view runs fn on the metadata under the shared store lock.
func (s *Store) view(fn func(m *metadata) error) error {
	unlock, err := s.lock(false)
	if err != nil {
		return err
	}
	defer unlock()
	m, err := s.load()
	if err != nil {
		return err
	}
	return fn(m)
}

// update runs fn on the metadata under the exclusive store lock and saves the result
// when fn succeeds. It also empties tmp/ of what crashed imports left, when no import
// is running.
func (s *Store) update(fn func(m *metadata) error) error {
	unlock, err := s.lock(true)
	if err != nil {
		return err
	}
	defer unlock()
	m, err := s.load()
	if err != nil {
		return err
	}
	if err := fn(m); err != nil {
		return err
	}
	if err := s.saveLocked(m); err != nil {
		return err
	}
	s.cleanTmp()
	return nil
}

// busy marks an import in progress (tmp/.busy held shared); the release is returned.
func (s *Store) busy() (func(), error) {
	f, err := os.OpenFile(s.path(tmpDir, busyName), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH); err != nil {
		f.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	return func() { f.Close() }, nil
}

// cleanTmp removes leftovers of crashed imports when no import holds tmp/.busy.
// Best effort: a failure only leaves junk for the next time.
func (s *Store) cleanTmp() {
	f, err := os.OpenFile(s.path(tmpDir, busyName), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		return
	}
	ents, err := os.ReadDir(s.path(tmpDir))
	if err != nil {
		return
	}
	for _, e := range ents {
		if e.Name() != busyName {
			_ = os.RemoveAll(s.path(tmpDir, e.Name()))
		}
	}
}

// Layers returns the layer records sorted by digest.
func (s *Store) Layers() ([]Layer, error) {
	return records(s, func(m *metadata) map[string]*Layer { return m.Layers })
}

// Images returns the image records sorted by name.
func (s *Store) Images() ([]Image, error) {
	return records(s, func(m *metadata) map[string]*Image { return m.Images })
}

// Containers returns the container records sorted by name.
func (s *Store) Containers() ([]Container, error) {
	return records(s, func(m *metadata) map[string]*Container { return m.Containers })
}

// records copies the records of one kind out of the metadata, sorted by key.
func records[T any](s *Store, of func(*metadata) map[string]*T) ([]T, error) {
	var out []T
	err := s.view(func(m *metadata) error {
		recs := of(m)
		for _, k := range sortedKeys(recs) {
			out = append(out, *recs[k])
		}
		return nil
	})
	return out, err
}
