package store

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// validContainerName is Docker's rule for container names, ^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$,
// written out: a regexp compiled at package init costs every start of the binary
// (each mount starts it twice) more than the rest of this package's init together.
func validContainerName(name string) bool {
	if len(name) == 0 || len(name) > 128 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// mountSourcePrefix starts the source of a container's mount in /proc/self/mountinfo,
// followed by the container ID: how `container rm` knows it is mounted.
const mountSourcePrefix = "cowfs-"

// MountSource is what a mount of c shows as its source.
func (c Container) MountSource() string { return mountSourcePrefix + c.ID }

func (s *Store) containerDir(c Container) string { return s.path(containersDir, c.ID) }

// UpperDir and WorkDir are the container's writable layer and overlay work directory.
func (s *Store) UpperDir(c Container) string { return s.path(containersDir, c.ID, upperSubdir) }
func (s *Store) WorkDir(c Container) string  { return s.path(containersDir, c.ID, workSubdir) }

// CreateContainer makes a container of image: a record and empty upper and work
// directories. An empty name becomes the first 12 digits of the new ID.
func (s *Store) CreateContainer(image, name string) (Container, error) {
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return Container{}, fmt.Errorf("container id: %w", err)
	}
	c := Container{ID: hex.EncodeToString(raw[:]), Image: image, Created: time.Now().UTC()}
	c.Name = name
	if c.Name == "" {
		c.Name = c.ID[:12]
	}
	if !validContainerName(c.Name) {
		return Container{}, fmt.Errorf("bad container name %q (letters, digits, '_', '.', '-')", c.Name)
	}
	err := s.update(func(m *metadata) error {
		if _, ok := m.Images[image]; !ok {
			return fmt.Errorf("no image %s", image)
		}
		if _, ok := m.Containers[c.Name]; ok {
			return fmt.Errorf("container %s exists", c.Name)
		}
		if err := os.Mkdir(s.containerDir(c), 0o700); err != nil {
			return fmt.Errorf("store: %w", err)
		}
		// The upper root is the merged root: it has the usual mode of a root directory.
		if err := os.Mkdir(s.UpperDir(c), 0o755); err != nil {
			return fmt.Errorf("store: %w", err)
		}
		if err := os.Mkdir(s.WorkDir(c), 0o700); err != nil {
			return fmt.Errorf("store: %w", err)
		}
		m.Containers[c.Name] = &c
		return nil
	})
	return c, err
}

// Container returns the container named name.
func (s *Store) Container(name string) (Container, error) {
	var c Container
	err := s.view(func(m *metadata) error {
		found, ok := m.Containers[name]
		if !ok {
			return fmt.Errorf("no container %s", name)
		}
		c = *found
		return nil
	})
	return c, err
}

// MountSpec is what a mount of a container needs.
type MountSpec struct {
	Container Container
	// Lowers are the image's layer directories, topmost first (as lowerdir= lists them).
	Lowers      []string
	Upper, Work string
	Source      string
}

// ContainerMount returns the layers of a mount of container name.
func (s *Store) ContainerMount(name string) (MountSpec, error) {
	var spec MountSpec
	err := s.view(func(m *metadata) error {
		c, ok := m.Containers[name]
		if !ok {
			return fmt.Errorf("no container %s", name)
		}
		lowers, err := s.lowersLocked(m, c)
		if err != nil {
			return err
		}
		spec = MountSpec{Container: *c, Lowers: lowers, Upper: s.UpperDir(*c), Work: s.WorkDir(*c), Source: c.MountSource()}
		return nil
	})
	return spec, err
}

// lowersLocked is the layer directories of c's image, topmost first.
func (s *Store) lowersLocked(m *metadata, c *Container) ([]string, error) {
	img, ok := m.Images[c.Image]
	if !ok {
		return nil, fmt.Errorf("container %s: no image %s", c.Name, c.Image)
	}
	var out []string
	for i := len(img.Layers) - 1; i >= 0; i-- {
		out = append(out, s.LayerDir(img.Layers[i]))
	}
	return out, nil
}

// Mounted reports whether c is mounted in this mount namespace (a mount whose source
// is c.MountSource()).
func Mounted(c Container) (bool, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, fmt.Errorf("reading mounts: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		// ... mount-point options [optional fields] - fstype source super-options
		_, after, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		if f := strings.Fields(after); len(f) >= 2 && f[1] == c.MountSource() {
			return true, nil
		}
	}
	return false, nil
}

// RemoveContainer removes a container and its writable layer, refused while mounted.
func (s *Store) RemoveContainer(name string) error {
	var c Container
	err := s.update(func(m *metadata) error {
		found, ok := m.Containers[name]
		if !ok {
			return fmt.Errorf("no container %s", name)
		}
		mounted, err := Mounted(*found)
		if err != nil {
			return err
		}
		if mounted {
			return fmt.Errorf("container %s is mounted", name)
		}
		c = *found
		delete(m.Containers, name)
		return nil
	})
	if err != nil {
		return err
	}
	return s.removeTree(s.containerDir(c))
}

// ContainerUsage is one line of `cowfs ps --size`.
type ContainerUsage struct {
	Container
	// Size is the bytes in the container's writable layer; VirtualSize adds its
	// image's read-only layers (shared/reference, "Container size on disk").
	Size        int64 `json:"size"`
	VirtualSize int64 `json:"virtualSize"`
	Mounted     bool  `json:"mounted"`
}

// Usage is the containers' sizes and their total on disk.
type Usage struct {
	Containers []ContainerUsage `json:"containers"`
	// TotalSize is the sum of the writable layers; TotalDisk adds each read-only layer
	// the containers use once, however many containers and images share it.
	TotalSize int64 `json:"totalSize"`
	TotalDisk int64 `json:"totalDisk"`
}

// ContainerUsages measures every container, by name.
func (s *Store) ContainerUsages() (Usage, error) {
	var u Usage
	err := s.view(func(m *metadata) error {
		counted := map[digest.Digest]bool{}
		for _, name := range sortedKeys(m.Containers) {
			c := m.Containers[name]
			cu := ContainerUsage{Container: *c}
			size, err := TreeSize(s.UpperDir(*c))
			if err != nil {
				return err
			}
			cu.Size = size
			if img, ok := m.Images[c.Image]; ok {
				cu.VirtualSize = imageSizeLocked(m, img, map[digest.Digest]bool{}) + size
				u.TotalDisk += imageSizeLocked(m, img, counted)
			}
			if cu.Mounted, err = Mounted(*c); err != nil {
				return err
			}
			u.TotalSize += size
			u.TotalDisk += size
			u.Containers = append(u.Containers, cu)
		}
		return nil
	})
	return u, err
}
