package store

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"

	digest "github.com/opencontainers/go-digest"
)

// OCI image layout names and media types (image-spec image-layout.md, media-types.md).
const (
	ociLayoutFile    = "oci-layout"
	ociIndexFile     = "index.json"
	ociBlobsDir      = "blobs"
	ociLayoutVersion = "1.0.0"
	ociRefName       = "org.opencontainers.image.ref.name"

	mediaOCIIndex      = "application/vnd.oci.image.index.v1+json"
	mediaOCIManifest   = "application/vnd.oci.image.manifest.v1+json"
	mediaDockerList    = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaDockerManifst = "application/vnd.docker.distribution.manifest.v2+json"

	// maxJSONBlob bounds the manifests, indexes and configs read into memory.
	maxJSONBlob = 16 << 20
)

type ociDescriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      digest.Digest     `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type ociIndex struct {
	SchemaVersion int             `json:"schemaVersion"`
	Manifests     []ociDescriptor `json:"manifests"`
}

type ociManifest struct {
	SchemaVersion int             `json:"schemaVersion"`
	Config        ociDescriptor   `json:"config"`
	Layers        []ociDescriptor `json:"layers"`
}

// OCIOptions tunes an image import.
type OCIOptions struct {
	// Name names the image; by default the index's org.opencontainers.image.ref.name
	// annotation, else the first 12 digits of the image ID. With several images in
	// the layout, Name is refused.
	Name string
	// Progress, when set, wraps the reader of each layer blob (to show progress).
	Progress func(r io.Reader, size int64, label string) io.Reader
}

// ImportOCI imports the images of an OCI image layout (a directory, or a tar of one),
// verifying every blob it reads against its digest and size and each layer's diff ID
// against the config; layers already stored are verified but not stored again.
func (s *Store) ImportOCI(src string, o OCIOptions) ([]Image, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	dir := src
	if !fi.IsDir() {
		release, err := s.busy()
		if err != nil {
			return nil, err
		}
		defer release()
		tmp, err := os.MkdirTemp(s.path(tmpDir), "oci-")
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		defer os.RemoveAll(tmp)
		if err := unpackOCIArchive(src, tmp); err != nil {
			return nil, err
		}
		dir = tmp
	}
	l := ociLayout{dir: dir}
	if err := l.checkVersion(); err != nil {
		return nil, err
	}
	var idx ociIndex
	if err := l.readJSONFile(ociIndexFile, &idx); err != nil {
		return nil, err
	}
	manifests, err := l.manifests(idx, 0)
	if err != nil {
		return nil, err
	}
	if len(manifests) == 0 {
		return nil, fmt.Errorf("image %s: index.json lists no image", src)
	}
	if o.Name != "" && len(manifests) > 1 {
		return nil, fmt.Errorf("image %s holds %d images: --name needs one", src, len(manifests))
	}
	var out []Image
	for _, md := range manifests {
		img, err := s.importManifest(l, md, o)
		if err != nil {
			return out, err
		}
		out = append(out, img)
	}
	return out, nil
}

type ociLayout struct{ dir string }

func (l ociLayout) checkVersion() error {
	var v struct {
		ImageLayoutVersion string `json:"imageLayoutVersion"`
	}
	if err := l.readJSONFile(ociLayoutFile, &v); err != nil {
		return err
	}
	if v.ImageLayoutVersion != ociLayoutVersion {
		return fmt.Errorf("oci-layout version %q, want %q", v.ImageLayoutVersion, ociLayoutVersion)
	}
	return nil
}

func (l ociLayout) readJSONFile(name string, v any) error {
	f, err := os.Open(filepath.Join(l.dir, name))
	if err != nil {
		return fmt.Errorf("image layout: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxJSONBlob))
	if err != nil {
		return fmt.Errorf("image layout %s: %w", name, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("image layout %s: %w", name, err)
	}
	return nil
}

// blobPath is the file of blob d, validated before it becomes a path.
func (l ociLayout) blobPath(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("blob %q: %w", d, err)
	}
	return filepath.Join(l.dir, ociBlobsDir, d.Algorithm().String(), d.Encoded()), nil
}

// verifier checks a blob's bytes against its descriptor as they are read.
type verifier struct {
	r    io.Reader
	h    hash.Hash
	n    int64
	desc ociDescriptor
}

func (v *verifier) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	return n, err
}

// check is called once the blob is read to its end.
func (v *verifier) check() error {
	if v.n != v.desc.Size {
		return fmt.Errorf("blob %s: %d bytes, the descriptor says %d", v.desc.Digest, v.n, v.desc.Size)
	}
	if got := digest.NewDigestFromBytes(digest.SHA256, v.h.Sum(nil)); got != v.desc.Digest {
		return fmt.Errorf("blob %s: content hashes to %s", v.desc.Digest, got)
	}
	return nil
}

// openBlob opens a blob for verified reading. Only sha256 blobs are supported.
func (l ociLayout) openBlob(desc ociDescriptor) (*os.File, *verifier, error) {
	p, err := l.blobPath(desc.Digest)
	if err != nil {
		return nil, nil, err
	}
	if desc.Digest.Algorithm() != digest.SHA256 {
		return nil, nil, fmt.Errorf("blob %s: only sha256 digests are supported", desc.Digest)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, fmt.Errorf("blob %s: %w", desc.Digest, err)
	}
	// One byte more than the descriptor says, to notice a longer blob.
	return f, &verifier{r: io.LimitReader(f, desc.Size+1), h: sha256.New(), desc: desc}, nil
}

// readBlob reads a small JSON blob, verified, into v.
func (l ociLayout) readBlob(desc ociDescriptor, v any) error {
	if desc.Size > maxJSONBlob || desc.Size < 0 {
		return fmt.Errorf("blob %s: size %d out of range", desc.Digest, desc.Size)
	}
	f, ver, err := l.openBlob(desc)
	if err != nil {
		return err
	}
	defer f.Close()
	data, err := io.ReadAll(ver)
	if err != nil {
		return fmt.Errorf("blob %s: %w", desc.Digest, err)
	}
	if err := ver.check(); err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("blob %s: %w", desc.Digest, err)
	}
	return nil
}

// manifests collects the image manifests an index lists, following nested indexes.
func (l ociLayout) manifests(idx ociIndex, depth int) ([]ociDescriptor, error) {
	if depth > 4 {
		return nil, errors.New("image indexes nested too deep")
	}
	var out []ociDescriptor
	for _, d := range idx.Manifests {
		switch d.MediaType {
		case mediaOCIManifest, mediaDockerManifst:
			out = append(out, d)
		case mediaOCIIndex, mediaDockerList:
			var sub ociIndex
			if err := l.readBlob(d, &sub); err != nil {
				return nil, err
			}
			more, err := l.manifests(sub, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, more...)
		default:
			return nil, fmt.Errorf("index entry %s: unsupported media type %q", d.Digest, d.MediaType)
		}
	}
	return out, nil
}

// importManifest imports one image: its config and layers, verified, then the record.
func (s *Store) importManifest(l ociLayout, md ociDescriptor, o OCIOptions) (Image, error) {
	var man ociManifest
	if err := l.readBlob(md, &man); err != nil {
		return Image{}, err
	}
	var cfg ociConfig
	if err := l.readBlob(man.Config, &cfg); err != nil {
		return Image{}, err
	}
	if len(cfg.RootFS.DiffIDs) != len(man.Layers) {
		return Image{}, fmt.Errorf("image %s: %d layers but %d diff IDs in its config", md.Digest, len(man.Layers), len(cfg.RootFS.DiffIDs))
	}
	for i, ld := range man.Layers {
		want := cfg.RootFS.DiffIDs[i]
		if err := want.Validate(); err != nil {
			return Image{}, fmt.Errorf("image %s: diff ID %q: %w", md.Digest, want, err)
		}
		if err := s.importBlobLayer(l, ld, want, o); err != nil {
			return Image{}, err
		}
	}
	name := o.Name
	if name == "" {
		name = md.Annotations[ociRefName]
	}
	if name == "" {
		name = man.Config.Digest.Encoded()[:12]
	}
	var img Image
	err := s.update(func(m *metadata) error {
		var err error
		img, err = addImageLocked(m, name, man.Config.Digest, cfg.RootFS.DiffIDs)
		return err
	})
	return img, err
}

// importBlobLayer imports layer blob ld, whose uncompressed digest must be diffID.
func (s *Store) importBlobLayer(l ociLayout, ld ociDescriptor, diffID digest.Digest, o OCIOptions) error {
	f, ver, err := l.openBlob(ld)
	if err != nil {
		return err
	}
	defer f.Close()
	stored := false
	if err := s.view(func(m *metadata) error {
		_, stored = m.Layers[diffID.String()]
		return nil
	}); err != nil {
		return err
	}
	var r io.Reader = ver
	if o.Progress != nil {
		r = o.Progress(r, ld.Size, "layer "+ld.Digest.Encoded()[:12])
	}
	if stored {
		// Verified all the same: the layout must be sound whatever the store holds.
		if _, err := io.Copy(io.Discard, r); err != nil {
			return fmt.Errorf("blob %s: %w", ld.Digest, err)
		}
		return ver.check()
	}
	_, err = s.ImportLayer(r, ImportOptions{Check: func(got digest.Digest) error {
		// The decompressor may stop at the end of the compressed stream.
		if _, err := io.Copy(io.Discard, r); err != nil {
			return fmt.Errorf("blob %s: %w", ld.Digest, err)
		}
		if err := ver.check(); err != nil {
			return err
		}
		if got != diffID {
			return fmt.Errorf("layer %s: uncompressed content hashes to %s, the config says %s", ld.Digest, got, diffID)
		}
		return nil
	}})
	return err
}

// unpackOCIArchive writes the layout files of a tar of an OCI layout into dir: only
// oci-layout, index.json and blobs/sha256/HEX (a valid digest) as regular files;
// anything else in the archive is ignored.
func unpackOCIArchive(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer f.Close()
	if err := os.MkdirAll(filepath.Join(dir, ociBlobsDir, string(digest.SHA256)), 0o700); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("image archive %s: %w", archive, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return fmt.Errorf("image archive entry %q: %w", hdr.Name, err)
		}
		var dst string
		switch {
		case name == ociLayoutFile || name == ociIndexFile:
			dst = filepath.Join(dir, name)
		case strings.HasPrefix(name, ociBlobsDir+"/"):
			rest := strings.TrimPrefix(name, ociBlobsDir+"/")
			alg, hex, ok := strings.Cut(rest, "/")
			d := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
			if !ok || d.Validate() != nil || d.Algorithm() != digest.SHA256 {
				continue
			}
			dst = filepath.Join(dir, ociBlobsDir, string(digest.SHA256), d.Encoded())
		default:
			continue
		}
		out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		_, err = io.Copy(out, tr)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("image archive entry %q: %w", hdr.Name, err)
		}
	}
}
