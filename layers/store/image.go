package store

import (
	"encoding/json"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"time"
	"unicode"

	digest "github.com/opencontainers/go-digest"
)

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// validImageName accepts references like "acme/my-final-image:1.0": printable, no
// spaces, not starting with '-', at most 255 bytes. Image names never become paths.
func validImageName(name string) error {
	if name == "" || len(name) > 255 || strings.HasPrefix(name, "-") ||
		strings.IndexFunc(name, func(r rune) bool { return !unicode.IsPrint(r) || unicode.IsSpace(r) }) >= 0 {
		return fmt.Errorf("bad image name %q", name)
	}
	return nil
}

// ociConfig is the part of an OCI image config (image-spec config.md) cowfs reads and
// writes.
type ociConfig struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	RootFS       struct {
		Type    string          `json:"type"`
		DiffIDs []digest.Digest `json:"diff_ids"`
	} `json:"rootfs"`
}

// configID is the ID of an image cowfs makes: the digest of a minimal OCI config
// listing its layers.
func configID(layers []digest.Digest) digest.Digest {
	c := ociConfig{Architecture: runtime.GOARCH, OS: "linux"}
	c.RootFS.Type = "layers"
	c.RootFS.DiffIDs = append([]digest.Digest{}, layers...)
	if c.RootFS.DiffIDs == nil {
		c.RootFS.DiffIDs = []digest.Digest{}
	}
	data, _ := json.Marshal(c) // plain structs: cannot fail
	return digest.FromBytes(data)
}

// addImageLocked records an image of existing layers.
func addImageLocked(m *metadata, name string, id digest.Digest, layers []digest.Digest) (Image, error) {
	if err := validImageName(name); err != nil {
		return Image{}, err
	}
	if _, ok := m.Images[name]; ok {
		return Image{}, fmt.Errorf("image %s exists", name)
	}
	for _, d := range layers {
		if _, ok := m.Layers[d.String()]; !ok {
			return Image{}, fmt.Errorf("no layer %s", d)
		}
	}
	img := Image{Name: name, ID: id, Layers: append([]digest.Digest{}, layers...), Created: time.Now().UTC()}
	m.Images[name] = &img
	return img, nil
}

// CreateImage records an image named name of stored layers (bottom first; each a
// digest or a unique prefix).
func (s *Store) CreateImage(name string, refs []string) (Image, error) {
	var img Image
	err := s.update(func(m *metadata) error {
		var ds []digest.Digest
		for _, r := range refs {
			l, err := resolveLayerLocked(m, r)
			if err != nil {
				return err
			}
			ds = append(ds, l.Digest)
		}
		var err error
		img, err = addImageLocked(m, name, configID(ds), ds)
		return err
	})
	return img, err
}

// RemoveImage removes an image, refused while a container uses it. Its layers stay.
func (s *Store) RemoveImage(name string) error {
	return s.update(func(m *metadata) error {
		if _, ok := m.Images[name]; !ok {
			return fmt.Errorf("no image %s", name)
		}
		for _, c := range sortedKeys(m.Containers) {
			if m.Containers[c].Image == name {
				return fmt.Errorf("image %s is used by container %s", name, c)
			}
		}
		delete(m.Images, name)
		return nil
	})
}

// ImageLayer is one layer of an image listing.
type ImageLayer struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	// Shared: another image uses this layer too.
	Shared bool `json:"shared"`
}

// ImageUsage is an image with its sizes, as `docker system df -v` reports them.
type ImageUsage struct {
	Image
	// Size is the sum of the image's layers.
	Size int64 `json:"size"`
	// SharedSize is the part of Size in layers other images use too; UniqueSize the rest.
	SharedSize int64        `json:"sharedSize"`
	UniqueSize int64        `json:"uniqueSize"`
	LayerSizes []ImageLayer `json:"layerSizes"`
}

// ImageUsages lists the images with their sizes, by name.
func (s *Store) ImageUsages() ([]ImageUsage, error) {
	var out []ImageUsage
	err := s.view(func(m *metadata) error {
		users := map[digest.Digest]map[string]bool{}
		for name, img := range m.Images {
			for _, d := range img.Layers {
				if users[d] == nil {
					users[d] = map[string]bool{}
				}
				users[d][name] = true
			}
		}
		for _, name := range sortedKeys(m.Images) {
			u := ImageUsage{Image: *m.Images[name]}
			counted := map[digest.Digest]bool{}
			for _, d := range u.Layers {
				l := m.Layers[d.String()]
				var size int64
				if l != nil {
					size = l.Size
				}
				shared := len(users[d]) > 1
				u.LayerSizes = append(u.LayerSizes, ImageLayer{Digest: d, Size: size, Shared: shared})
				if counted[d] { // a layer listed twice is stored once
					continue
				}
				counted[d] = true
				u.Size += size
				if shared {
					u.SharedSize += size
				} else {
					u.UniqueSize += size
				}
			}
			out = append(out, u)
		}
		return nil
	})
	return out, err
}

// imageSizeLocked is the bytes of the distinct layers of img.
func imageSizeLocked(m *metadata, img *Image, counted map[digest.Digest]bool) int64 {
	var size int64
	for _, d := range img.Layers {
		if counted[d] {
			continue
		}
		counted[d] = true
		if l := m.Layers[d.String()]; l != nil {
			size += l.Size
		}
	}
	return size
}
