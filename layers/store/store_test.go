package store

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

func gzipOf(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstdOf(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestImportLayerStoresContentOnce(t *testing.T) {
	requireRoot(t)
	s := newStore(t)
	raw := tarOf(t, dirE("etc"), reg("etc/hosts", "127.0.0.1 localhost\n"), wh("", "gone"))
	want := sha(raw)
	for _, tt := range []struct {
		name string
		data []byte
	}{
		{"an uncompressed tar is stored under its sha256", raw},
		{"the same tar gzipped has the same digest and is not stored again", gzipOf(t, raw)},
		{"the same tar in zstd has the same digest and is not stored again", zstdOf(t, raw)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l, err := s.ImportLayer(bytes.NewReader(tt.data), ImportOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if l.Digest != want {
				t.Errorf("digest %s, want %s", l.Digest, want)
			}
			if l.Size != int64(len("127.0.0.1 localhost\n")) {
				t.Errorf("size %d", l.Size)
			}
			ls, _ := s.Layers()
			ents, _ := os.ReadDir(s.path(layersDir))
			if len(ls) != 1 || len(ents) != 1 {
				t.Errorf("%d records and %d trees, want one of each", len(ls), len(ents))
			}
			tmp, _ := os.ReadDir(s.path(tmpDir))
			for _, e := range tmp {
				if e.Name() != busyName {
					t.Errorf("tmp/ still holds %s", e.Name())
				}
			}
		})
	}
}

func TestImportLayerLeavesNothingOnFailure(t *testing.T) {
	requireRoot(t)
	s := newStore(t)
	bad := tarOf(t, reg("ok", "1"), reg("../escape", "2"))
	_, err := s.ImportLayer(bytes.NewReader(bad), ImportOptions{})
	if err == nil || !strings.Contains(err.Error(), `"../escape"`) {
		t.Fatalf("err = %v, want one naming ../escape", err)
	}
	for _, d := range []string{layersDir, tmpDir} {
		ents, _ := os.ReadDir(s.path(d))
		for _, e := range ents {
			if e.Name() != busyName {
				t.Errorf("%s/ holds %s after a failed import", d, e.Name())
			}
		}
	}
	if ls, _ := s.Layers(); len(ls) != 0 {
		t.Errorf("layers %v after a failed import", ls)
	}
}

// sampleTree writes a tree with every kind of entry cowfs stores.
func sampleTree(t testing.TB, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "usr/bin"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "usr/bin/tool"), []byte("#!/bin/sh\necho hi\n"), 0o755))
	must(os.Link(filepath.Join(dir, "usr/bin/tool"), filepath.Join(dir, "usr/bin/tool2")))
	must(os.Symlink("usr/bin", filepath.Join(dir, "bin")))
	must(os.WriteFile(filepath.Join(dir, "setuid"), []byte("s"), 0o4755))
	must(unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600))
	must(os.Mkdir(filepath.Join(dir, "opaque"), 0o700))
	must(unix.Setxattr(filepath.Join(dir, "opaque"), "trusted.overlay.opaque", []byte("y"), 0))
	must(unix.Setxattr(filepath.Join(dir, "usr"), "user.note", []byte("v"), 0))
	must(unix.Mknod(filepath.Join(dir, "deleted"), unix.S_IFCHR, 0))
	must(os.WriteFile(filepath.Join(dir, ".wh.alsodeleted"), nil, 0o644))
	must(os.Chown(filepath.Join(dir, "setuid"), 1000, 1000))
}

func TestImportDirRoundTripsThroughExport(t *testing.T) {
	requireRoot(t)
	s := newStore(t)
	src := t.TempDir()
	sampleTree(t, src)
	l, err := s.ImportDir(src)
	if err != nil {
		t.Fatal(err)
	}
	if l.TreeDigest != l.Digest {
		t.Errorf("the stored tree hashes to %s, the imported tar to %s", l.TreeDigest, l.Digest)
	}
	var out bytes.Buffer
	if _, err := s.ExportLayer(&out, l.Digest.String()); err != nil {
		t.Fatal(err)
	}
	if got := sha(out.Bytes()); got != l.Digest {
		t.Errorf("export hashes to %s, want %s", got, l.Digest)
	}
	if got, want := treeOf(t, s.LayerDir(l.Digest)), treeOf(t, src); !slices.Equal(got, want) {
		t.Errorf("stored tree:\n%s\nsource:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Exporting by a short prefix works too.
	if _, err := s.ExportLayer(&bytes.Buffer{}, l.Digest.Encoded()[:8]); err != nil {
		t.Errorf("export by prefix: %v", err)
	}
}

func TestVerifyReportsChangedLayers(t *testing.T) {
	requireRoot(t)
	s := newStore(t)
	a, err := s.ImportLayer(bytes.NewReader(tarOf(t, reg("a", "1"))), ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.ImportLayer(bytes.NewReader(tarOf(t, reg("b", "2"))), ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.LayerDir(b.Digest), "b"), []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := s.Verify()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		switch r.Layer.Digest {
		case a.Digest:
			if r.Err != nil {
				t.Errorf("the untouched layer: %v", r.Err)
			}
		case b.Digest:
			if r.Err == nil {
				t.Errorf("the tampered layer verified")
			}
		}
	}
}

func TestRemovalsAreRefusedWhileInUse(t *testing.T) {
	requireRoot(t)
	s := newStore(t)
	l, err := s.ImportLayer(bytes.NewReader(tarOf(t, reg("a", "1"))), ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateImage("img", []string{l.Digest.String()}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateContainer("img", "c1"); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		do      func() error
		wantErr string
	}{
		{"a layer used by an image cannot be removed", func() error { _, err := s.RemoveLayer(l.Digest.String()); return err }, "used by image img"},
		{"an image used by a container cannot be removed", func() error { return s.RemoveImage("img") }, "used by container c1"},
		{"a container with a taken name cannot be created", func() error { _, err := s.CreateContainer("img", "c1"); return err }, "exists"},
		{"a container with a bad name cannot be created", func() error { _, err := s.CreateContainer("img", "../x"); return err }, "bad container name"},
		{"a container of a missing image cannot be created", func() error { _, err := s.CreateContainer("nope", ""); return err }, "no image nope"},
		{"the container can be removed", func() error { return s.RemoveContainer("c1") }, ""},
		{"then the image", func() error { return s.RemoveImage("img") }, ""},
		{"then the layer", func() error { _, err := s.RemoveLayer(l.Digest.String()); return err }, ""},
	}
	for _, st := range steps {
		err := st.do()
		if st.wantErr == "" && err != nil || st.wantErr != "" && (err == nil || !strings.Contains(err.Error(), st.wantErr)) {
			t.Errorf("%s: err = %v, want %q", st.name, err, st.wantErr)
		}
	}
	if ents, _ := os.ReadDir(s.path(layersDir)); len(ents) != 0 {
		t.Errorf("layers/ holds %d entries after removing everything", len(ents))
	}
	if ents, _ := os.ReadDir(s.path(containersDir)); len(ents) != 0 {
		t.Errorf("containers/ holds %d entries after removing everything", len(ents))
	}
}

func TestConcurrentImportsKeepMetadataWhole(t *testing.T) {
	requireRoot(t)
	s := newStore(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Separate Store values, as separate processes would have.
			s2 := &Store{Root: s.Root}
			_, err := s2.ImportLayer(bytes.NewReader(tarOf(t, reg("f", strings.Repeat("x", i+1)))), ImportOptions{})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if ls, _ := s.Layers(); len(ls) != 8 {
		t.Errorf("%d layers recorded, want 8", len(ls))
	}
}

// ociLayoutDir writes an OCI image layout of the given layer tars (bottom first),
// gzipped, and returns the dir and the blob digests of the layers.
func ociLayoutDir(t testing.TB, refName string, tars ...[]byte) (string, []digest.Digest) {
	t.Helper()
	dir := t.TempDir()
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	put := func(b []byte) ociDescriptor {
		sum := sha256.Sum256(b)
		h := hex.EncodeToString(sum[:])
		if err := os.WriteFile(filepath.Join(blobs, h), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return ociDescriptor{Digest: digest.NewDigestFromEncoded(digest.SHA256, h), Size: int64(len(b))}
	}
	var cfg ociConfig
	cfg.OS, cfg.Architecture, cfg.RootFS.Type = "linux", "amd64", "layers"
	var man ociManifest
	man.SchemaVersion = 2
	var layerDigests []digest.Digest
	for _, tb := range tars {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, sha(tb))
		d := put(gzipOf(t, tb))
		d.MediaType = "application/vnd.oci.image.layer.v1.tar+gzip"
		man.Layers = append(man.Layers, d)
		layerDigests = append(layerDigests, d.Digest)
	}
	man.Config = put(mustJSON(t, cfg))
	man.Config.MediaType = "application/vnd.oci.image.config.v1+json"
	md := put(mustJSON(t, man))
	md.MediaType = mediaOCIManifest
	if refName != "" {
		md.Annotations = map[string]string{ociRefName: refName}
	}
	if err := os.WriteFile(filepath.Join(dir, ociIndexFile), mustJSON(t, ociIndex{SchemaVersion: 2, Manifests: []ociDescriptor{md}}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ociLayoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, layerDigests
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tarDir tars a directory's files (an OCI archive).
func tarDir(t testing.TB, dir string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "image.tar")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestImportOCI(t *testing.T) {
	requireRoot(t)
	base := tarOf(t, dirE("etc"), reg("etc/os-release", "ID=test\n"))
	app := tarOf(t, dirE("app"), reg("app/run", "run"), wh("etc", "os-release"))
	t.Run("a layout imports with its layers and name, and shared layers are stored once", func(t *testing.T) {
		s := newStore(t)
		dir, _ := ociLayoutDir(t, "base:1", base)
		imgs, err := s.ImportOCI(dir, OCIOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(imgs) != 1 || imgs[0].Name != "base:1" || len(imgs[0].Layers) != 1 || imgs[0].Layers[0] != sha(base) {
			t.Fatalf("images %+v", imgs)
		}
		dir2, _ := ociLayoutDir(t, "", base, app)
		imgs, err = s.ImportOCI(tarDir(t, dir2), OCIOptions{Name: "app:1"})
		if err != nil {
			t.Fatal(err)
		}
		if imgs[0].Name != "app:1" || len(imgs[0].Layers) != 2 {
			t.Fatalf("images %+v", imgs)
		}
		if ls, _ := s.Layers(); len(ls) != 2 {
			t.Errorf("%d layers stored, want 2 (the base once)", len(ls))
		}
		us, err := s.ImageUsages()
		if err != nil {
			t.Fatal(err)
		}
		baseSize := int64(len("ID=test\n"))
		if us[0].Name != "app:1" || us[0].SharedSize != baseSize || us[0].UniqueSize != 3 || us[1].SharedSize != baseSize || us[1].UniqueSize != 0 {
			t.Errorf("usages %+v", us)
		}
	})
	corrupt := []struct {
		name    string
		spoil   func(t *testing.T, dir string, layers []digest.Digest)
		wantErr string
	}{
		{"a layer blob that does not match its digest is refused", func(t *testing.T, dir string, layers []digest.Digest) {
			p := filepath.Join(dir, "blobs", "sha256", layers[0].Encoded())
			if err := os.WriteFile(p, gzipOf(t, tarOf(t, reg("evil", "x"))), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "blob sha256:"},
		{"a config whose diff ID does not match the layer is refused", func(t *testing.T, dir string, layers []digest.Digest) {
			// Rewrite the layer blob and its digest in the manifest, but not the config.
			other := gzipOf(t, tarOf(t, reg("other", "y")))
			sum := sha256.Sum256(other)
			h := hex.EncodeToString(sum[:])
			os.WriteFile(filepath.Join(dir, "blobs", "sha256", h), other, 0o644)
			rewriteManifest(t, dir, func(m *ociManifest) {
				m.Layers[0].Digest = digest.NewDigestFromEncoded(digest.SHA256, h)
				m.Layers[0].Size = int64(len(other))
			})
		}, "the config says"},
		{"a manifest that does not match its digest is refused", func(t *testing.T, dir string, layers []digest.Digest) {
			var idx ociIndex
			b, _ := os.ReadFile(filepath.Join(dir, ociIndexFile))
			json.Unmarshal(b, &idx)
			p := filepath.Join(dir, "blobs", "sha256", idx.Manifests[0].Digest.Encoded())
			m, _ := os.ReadFile(p)
			os.WriteFile(p, append(m, ' '), 0o644)
		}, "bytes, the descriptor says"},
		{"a digest that is not hex is refused before it becomes a path", func(t *testing.T, dir string, layers []digest.Digest) {
			os.WriteFile(filepath.Join(dir, ociIndexFile), []byte(`{"schemaVersion":2,"manifests":[{"mediaType":"`+mediaOCIManifest+`","digest":"sha256:../../../etc/passwd","size":1}]}`), 0o644)
		}, "invalid"},
	}
	for _, tt := range corrupt {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			dir, layers := ociLayoutDir(t, "x", base)
			tt.spoil(t, dir, layers)
			_, err := s.ImportOCI(dir, OCIOptions{})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if ls, _ := s.Layers(); len(ls) != 0 {
				t.Errorf("layers %v stored from a refused image", ls)
			}
			if imgs, _ := s.Images(); len(imgs) != 0 {
				t.Errorf("images %v recorded from a refused image", imgs)
			}
		})
	}
}

func rewriteManifest(t *testing.T, dir string, fn func(*ociManifest)) {
	t.Helper()
	var idx ociIndex
	b, _ := os.ReadFile(filepath.Join(dir, ociIndexFile))
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	var m ociManifest
	mb, _ := os.ReadFile(filepath.Join(dir, "blobs", "sha256", idx.Manifests[0].Digest.Encoded()))
	if err := json.Unmarshal(mb, &m); err != nil {
		t.Fatal(err)
	}
	fn(&m)
	nb := mustJSON(t, m)
	sum := sha256.Sum256(nb)
	h := hex.EncodeToString(sum[:])
	os.WriteFile(filepath.Join(dir, "blobs", "sha256", h), nb, 0o644)
	idx.Manifests[0].Digest = digest.NewDigestFromEncoded(digest.SHA256, h)
	idx.Manifests[0].Size = int64(len(nb))
	os.WriteFile(filepath.Join(dir, ociIndexFile), mustJSON(t, idx), 0o644)
}
