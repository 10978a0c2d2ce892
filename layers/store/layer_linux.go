package store

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cowfs/cowfs/whiteout"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// zstdMagic starts a zstd frame (RFC 8878); gzip streams start with 1f 8b (RFC 1952).
var (
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
	gzipMagic = []byte{0x1f, 0x8b}
)

// ImportOptions tunes one layer import.
type ImportOptions struct {
	// Check, when set, sees the diff ID once the whole stream is read, before the
	// layer is stored; an error discards the import (an image's config lists the
	// diff IDs its layers must have).
	Check func(diffID digest.Digest) error
}

// decompress detects gzip and zstd by their magic numbers; anything else is read as
// an uncompressed tar.
func decompress(r io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, _ := br.Peek(len(zstdMagic))
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip layer: %w", err)
		}
		return gz, func() { gz.Close() }, nil
	case bytes.Equal(magic, zstdMagic):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd layer: %w", err)
		}
		return zr, zr.Close, nil
	}
	return br, func() {}, nil
}

// ImportLayer reads a layer tar (uncompressed, gzip or zstd) from r and stores it under
// its diff ID, the sha256 of the uncompressed stream. The tree is extracted into tmp/
// and renamed into layers/ only when complete; a layer already stored is not stored
// again.
func (s *Store) ImportLayer(r io.Reader, o ImportOptions) (Layer, error) {
	release, err := s.busy()
	if err != nil {
		return Layer{}, err
	}
	defer release()
	dr, closeDec, err := decompress(r)
	if err != nil {
		return Layer{}, err
	}
	defer closeDec()
	h := sha256.New()
	tee := io.TeeReader(dr, h)
	tmp, err := os.MkdirTemp(s.path(tmpDir), "layer-")
	if err != nil {
		return Layer{}, fmt.Errorf("store: %w", err)
	}
	defer os.RemoveAll(tmp) // nothing left once renamed into place
	if err := os.Chmod(tmp, 0o755); err != nil {
		return Layer{}, fmt.Errorf("store: %w", err)
	}
	if err := s.extractInto(tmp, tee); err != nil {
		return Layer{}, err
	}
	// The diff ID covers the whole stream, padding after the end-of-archive blocks too.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return Layer{}, fmt.Errorf("reading the layer: %w", err)
	}
	diffID := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))
	if o.Check != nil {
		if err := o.Check(diffID); err != nil {
			return Layer{}, err
		}
	}
	tree, err := treeDigest(tmp)
	if err != nil {
		return Layer{}, err
	}
	size, err := TreeSize(tmp)
	if err != nil {
		return Layer{}, err
	}
	var rec Layer
	err = s.update(func(m *metadata) error {
		if l, ok := m.Layers[diffID.String()]; ok {
			rec = *l
			return nil
		}
		dst := s.LayerDir(diffID)
		// A tree without a record is what a crash between rename and save leaves.
		if err := os.RemoveAll(dst); err != nil {
			return fmt.Errorf("store: %w", err)
		}
		if err := os.Rename(tmp, dst); err != nil {
			return fmt.Errorf("store: %w", err)
		}
		rec = Layer{Digest: diffID, TreeDigest: tree, Size: size, Created: time.Now().UTC()}
		m.Layers[diffID.String()] = &rec
		return nil
	})
	return rec, err
}

// extractInto extracts the tar stream r into the empty directory dir, in the whiteout
// format this process can write there.
func (s *Store) extractInto(dir string, r io.Reader) error {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer unix.Close(fd)
	root := os.Geteuid() == 0
	return Extract(fd, tar.NewReader(r), ExtractOptions{Format: s.format(), Devices: root, Chown: root})
}

// format probes how markers can be written in the store (like a mount does in its work
// dir): char 0/0 whiteouts when mknod works, else `.wh.` files; the opaque xattr in
// the trusted namespace, else user, else `.wh..wh..opq` files.
func (s *Store) format() whiteout.Format {
	fd, err := unix.Open(s.path(tmpDir), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return whiteout.Format{}
	}
	defer unix.Close(fd)
	f, err := whiteout.Probe(fd)
	if err != nil {
		return whiteout.Format{CharDev: f.CharDev}
	}
	return f
}

// ImportDir stores the tree at dir as a layer: the digest is that of the canonical tar
// of the tree (WriteTar), which is what `layer export` gives back.
func (s *Store) ImportDir(dir string) (Layer, error) {
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := WriteTar(pw, dir)
		pw.CloseWithError(err)
		errc <- err
	}()
	l, err := s.ImportLayer(pr, ImportOptions{})
	pr.CloseWithError(errImportStopped)
	if werr := <-errc; werr != nil && !errors.Is(werr, errImportStopped) {
		return Layer{}, werr
	}
	return l, err
}

// errImportStopped stops a tar writer whose reader has given up.
var errImportStopped = errors.New("import stopped")

// treeDigest is the sha256 of the canonical tar of the tree at dir.
func treeDigest(dir string) (digest.Digest, error) {
	h := sha256.New()
	if err := WriteTar(h, dir); err != nil {
		return "", err
	}
	return digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)), nil
}

// TreeSize is the bytes of the non-directory entries below dir, each multiply linked
// file once: the measure of a layer's size and of a container's writable layer
// (`docker ps -s` "size"). Whiteouts are empty and count nothing.
func TreeSize(dir string) (int64, error) {
	var size int64
	seen := map[[2]uint64]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
			key := [2]uint64{st.Dev, st.Ino}
			if seen[key] {
				return nil
			}
			seen[key] = true
		}
		size += info.Size()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", dir, err)
	}
	return size, nil
}

// resolveLayerLocked finds a stored layer by its digest or by a unique prefix of at
// least 4 hex digits of it.
func resolveLayerLocked(m *metadata, ref string) (*Layer, error) {
	if d, err := digest.Parse(ref); err == nil {
		if err := d.Validate(); err != nil {
			return nil, fmt.Errorf("layer %q: %w", ref, err)
		}
		if l, ok := m.Layers[d.String()]; ok {
			return l, nil
		}
		return nil, fmt.Errorf("no layer %s", d)
	}
	hex := strings.TrimPrefix(ref, string(digest.SHA256)+":")
	if len(hex) < 4 || strings.Trim(hex, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("%q is not a layer digest", ref)
	}
	var found *Layer
	for _, l := range m.Layers {
		if strings.HasPrefix(l.Digest.Encoded(), hex) {
			if found != nil {
				return nil, fmt.Errorf("layer %q is ambiguous", ref)
			}
			found = l
		}
	}
	if found == nil {
		return nil, fmt.Errorf("no layer %s", ref)
	}
	return found, nil
}

// ExportLayer writes the stored layer ref as its canonical tar (whose sha256 is the
// layer's TreeDigest, equal to its digest for layers cowfs made).
func (s *Store) ExportLayer(w io.Writer, ref string) (Layer, error) {
	var l Layer
	if err := s.view(func(m *metadata) error {
		found, err := resolveLayerLocked(m, ref)
		if found != nil {
			l = *found
		}
		return err
	}); err != nil {
		return Layer{}, err
	}
	return l, WriteTar(w, s.LayerDir(l.Digest))
}

// RemoveLayer removes the layer ref, refused while an image uses it.
func (s *Store) RemoveLayer(ref string) (Layer, error) {
	var l Layer
	err := s.update(func(m *metadata) error {
		found, err := resolveLayerLocked(m, ref)
		if err != nil {
			return err
		}
		for _, name := range sortedKeys(m.Images) {
			for _, d := range m.Images[name].Layers {
				if d == found.Digest {
					return fmt.Errorf("layer %s is used by image %s", found.Digest, name)
				}
			}
		}
		l = *found
		delete(m.Layers, found.Digest.String())
		return nil
	})
	if err != nil {
		return Layer{}, err
	}
	// The record is gone: the tree is invisible, and a crash here only leaves junk
	// that the next import of the same digest replaces.
	return l, s.removeTree(s.LayerDir(l.Digest))
}

// removeTree moves dir into tmp/ (at once invisible) and deletes it.
func (s *Store) removeTree(dir string) error {
	trash, err := os.MkdirTemp(s.path(tmpDir), "rm-")
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if err := os.Rename(dir, filepath.Join(trash, "x")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("store: %w", err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// VerifyResult is the outcome of re-hashing one layer.
type VerifyResult struct {
	Layer Layer
	// Err is nil when the tree still hashes to the layer's TreeDigest.
	Err error
}

// Verify re-hashes every stored layer's tree.
func (s *Store) Verify() ([]VerifyResult, error) {
	ls, err := s.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]VerifyResult, 0, len(ls))
	for _, l := range ls {
		r := VerifyResult{Layer: l}
		got, err := treeDigest(s.LayerDir(l.Digest))
		switch {
		case err != nil:
			r.Err = err
		case got != l.TreeDigest:
			r.Err = fmt.Errorf("content hashes to %s, recorded %s", got, l.TreeDigest)
		}
		out = append(out, r)
	}
	return out, nil
}
