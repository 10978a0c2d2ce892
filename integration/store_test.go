package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// storeCLI runs the freshly built cowfs against one store root.
type storeCLI struct {
	t    *testing.T
	root string
}

func newStoreCLI(t *testing.T) storeCLI {
	t.Helper()
	requireMounts(t)
	if buildErr != nil {
		t.Skip(buildErr)
	}
	return storeCLI{t: t, root: filepath.Join(t.TempDir(), "store")}
}

// run runs cowfs with args plus --root and returns stdout; a failure fails the test.
func (s storeCLI) run(args ...string) string {
	s.t.Helper()
	out, errOut, err := s.try(args...)
	if err != nil {
		s.t.Fatalf("cowfs %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out
}

func (s storeCLI) try(args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, fuseProg, append(args, "--root", s.root)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// mountContainer mounts container name at a new directory, unmounted at cleanup.
func (s storeCLI) mountContainer(name string) string {
	s.t.Helper()
	mnt := filepath.Join(s.t.TempDir(), "mnt-"+name)
	if err := os.Mkdir(mnt, 0o755); err != nil {
		s.t.Fatal(err)
	}
	s.run("container", "mount", name, mnt)
	s.t.Cleanup(func() { storeUnmount(s.t, mnt) })
	return mnt
}

// storeUnmount unmounts mnt if mounted, waiting for the daemon to let go.
func storeUnmount(t *testing.T, mnt string) {
	for i := 0; i < 50; i++ {
		err := unix.Unmount(mnt, 0)
		if err == nil || err == unix.EINVAL || err == unix.ENOENT {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("cannot unmount %s", mnt)
}

func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(root, p)
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(content, "->") {
			if err := os.Symlink(strings.TrimPrefix(content, "->"), full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// storeTree describes a merged tree as sorted "path kind mode detail" lines.
func storeTree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		line := rel + " " + info.Mode().String()
		switch {
		case info.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			line += " -> " + target
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += " " + string(b)
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// applyOCILayer is an independent applier of an OCI layer tar (image-spec layer.md,
// "Applying changesets") onto dir with plain path operations: `.wh.NAME` removes NAME,
// `.wh..wh..opq` empties its directory of what the layers below put there.
func applyOCILayer(t *testing.T, dir string, r io.Reader) {
	t.Helper()
	tr := tar.NewReader(r)
	type entry struct {
		hdr  *tar.Header
		body []byte
	}
	var entries []entry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		entries = append(entries, entry{hdr, body})
	}
	// Whiteouts first (they apply to the layers below only), then the entries.
	for _, e := range entries {
		name := strings.TrimSuffix(e.hdr.Name, "/")
		base, parent := filepath.Base(name), filepath.Dir(name)
		switch {
		case base == ".wh..wh..opq":
			ents, _ := os.ReadDir(filepath.Join(dir, parent))
			for _, c := range ents {
				os.RemoveAll(filepath.Join(dir, parent, c.Name()))
			}
		case strings.HasPrefix(base, ".wh."):
			os.RemoveAll(filepath.Join(dir, parent, strings.TrimPrefix(base, ".wh.")))
		}
	}
	for _, e := range entries {
		name := strings.TrimSuffix(e.hdr.Name, "/")
		if strings.HasPrefix(filepath.Base(name), ".wh.") {
			continue
		}
		p := filepath.Join(dir, name)
		switch e.hdr.Typeflag {
		case tar.TypeDir:
			if fi, err := os.Lstat(p); err == nil && !fi.IsDir() {
				os.Remove(p)
			}
			os.MkdirAll(p, 0o755)
			os.Chmod(p, os.FileMode(e.hdr.Mode&0o777))
		case tar.TypeReg:
			os.RemoveAll(p)
			if err := os.WriteFile(p, e.body, os.FileMode(e.hdr.Mode&0o777)); err != nil {
				t.Fatal(err)
			}
			os.Chmod(p, os.FileMode(e.hdr.Mode&0o777))
		case tar.TypeSymlink:
			os.RemoveAll(p)
			if err := os.Symlink(e.hdr.Linkname, p); err != nil {
				t.Fatal(err)
			}
		case tar.TypeLink:
			os.RemoveAll(p)
			if err := os.Link(filepath.Join(dir, e.hdr.Linkname), p); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("the applier does not handle %q (%c)", e.hdr.Name, e.hdr.Typeflag)
		}
	}
}

// TestStoreCommitRoundTrip: layers are imported, a container of them is mounted and
// changed (add, modify, delete, replace a directory), unmounted and committed; the
// committed layer applied by an independent OCI applier over the image's layers gives
// the tree the container showed, and its digest is the sha256 of the exported tar.
func TestStoreCommitRoundTrip(t *testing.T) {
	s := newStoreCLI(t)
	src := t.TempDir()
	base, app := filepath.Join(src, "base"), filepath.Join(src, "app")
	writeTree(t, base, map[string]string{
		"etc/os-release": "ID=base\n", "etc/motd": "hello\n", "bin/sh": "#!sh\n",
		"lib/a.so": "a", "lib/b.so": "b", "lib/sub/c.so": "c", "var/empty/": "",
	})
	writeTree(t, app, map[string]string{"app/run": "run v1\n", "app/conf/x.conf": "x=1\n", "bin/app": "->../app/run"})
	// The app layer as a gzipped tar, the base from its directory.
	appTar := filepath.Join(src, "app.tar.gz")
	if out, err := exec.Command("sh", "-c", "tar -C "+app+" -czf "+appTar+" .").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	baseDigest := strings.TrimSpace(s.run("layer", "import", base))
	appDigest := strings.TrimSpace(s.run("layer", "import", appTar))
	s.run("image", "create", "app:1", baseDigest, appDigest)
	s.run("container", "create", "app:1", "--name", "c1")
	mnt := s.mountContainer("c1")

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(mnt, "etc/new"), []byte("added\n"), 0o600))      // add
	f, err := os.OpenFile(filepath.Join(mnt, "app/run"), os.O_WRONLY|os.O_APPEND, 0) // modify
	must(err)
	_, err = f.WriteString("patched\n")
	must(err)
	must(f.Close())
	must(os.Remove(filepath.Join(mnt, "etc/motd"))) // delete
	must(os.RemoveAll(filepath.Join(mnt, "lib")))   // replace a directory
	must(os.Mkdir(filepath.Join(mnt, "lib"), 0o755))
	must(os.WriteFile(filepath.Join(mnt, "lib/new.so"), []byte("new"), 0o644))
	must(os.Symlink("/etc/new", filepath.Join(mnt, "newlink")))
	must(os.Chmod(filepath.Join(mnt, "bin/sh"), 0o755))
	want := storeTree(t, mnt)

	diff := s.run("diff", "c1")
	for _, line := range []string{"A /etc/new", "C /app/run", "D /etc/motd", "C /lib", "D /lib/a.so", "D /lib/sub", "A /lib/new.so", "A /newlink"} {
		if !slices.Contains(strings.Split(diff, "\n"), line) {
			t.Errorf("cowfs diff lacks %q:\n%s", line, diff)
		}
	}
	if _, errOut, err := s.try("container", "rm", "c1"); err == nil || !strings.Contains(errOut, "mounted") {
		t.Errorf("container rm of a mounted container: %v %q", err, errOut)
	}
	storeUnmount(t, mnt)

	newDigest := strings.TrimSpace(s.run("commit", "c1", "--name", "app:2"))
	exported := s.run("layer", "export", newDigest)
	sum := sha256.Sum256([]byte(exported))
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != newDigest {
		t.Errorf("commit printed %s; the exported tar hashes to %s", newDigest, got)
	}
	// Apply base, app and the new layer with the independent applier.
	applied := t.TempDir()
	for _, d := range []string{baseDigest, appDigest} {
		applyOCILayer(t, applied, strings.NewReader(s.run("layer", "export", d)))
	}
	applyOCILayer(t, applied, strings.NewReader(exported))
	if got := storeTree(t, applied); !slices.Equal(got, want) {
		t.Errorf("applied layers:\n%s\nthe container showed:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// And the new image mounts to the same tree.
	s.run("container", "create", "app:2", "--name", "c2")
	if got := storeTree(t, s.mountContainer("c2")); !slices.Equal(got, want) {
		t.Errorf("a container of the committed image:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if out, errOut, err := s.try("layer", "verify"); err != nil {
		t.Errorf("layer verify: %v\n%s%s", err, out, errOut)
	}
}

// TestStoreWalkthrough is the reference documents' walk-through ("Container size on
// disk"): two images sharing base layers, five containers of one, a small file
// written in three; ps --size shows 0 B for two and the file's size for three, the
// same virtual size for all five, and the shared layers stored once.
func TestStoreWalkthrough(t *testing.T) {
	s := newStoreCLI(t)
	src := t.TempDir()
	writeTree(t, filepath.Join(src, "ubuntu"), map[string]string{"bin/bash": strings.Repeat("b", 1000), "etc/os-release": "ID=ubuntu\n"})
	writeTree(t, filepath.Join(src, "systemd"), map[string]string{"run/systemd/container": "docker\n"})
	writeTree(t, filepath.Join(src, "app"), map[string]string{"app/hello.sh": "echo hello\n"})
	var baseLayers []string
	for _, d := range []string{"ubuntu", "systemd"} {
		baseLayers = append(baseLayers, strings.TrimSpace(s.run("layer", "import", filepath.Join(src, d))))
	}
	s.run(append([]string{"image", "create", "acme/my-base-image:1.0"}, baseLayers...)...)
	// The final image: the base plus the app, built by committing a container.
	s.run("container", "create", "acme/my-base-image:1.0", "--name", "build")
	mnt := s.mountContainer("build")
	if err := os.MkdirAll(filepath.Join(mnt, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "app/hello.sh"), []byte("echo hello\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	storeUnmount(t, mnt)
	s.run("commit", "build", "--name", "acme/my-final-image:1.0")
	s.run("container", "rm", "build")

	const small = "a small file\n"
	for i := 1; i <= 5; i++ {
		name := "my_container_" + string(rune('0'+i))
		s.run("container", "create", "acme/my-final-image:1.0", "--name", name)
		if i <= 3 {
			m := s.mountContainer(name)
			if err := os.WriteFile(filepath.Join(m, "tmp-file"), []byte(small), 0o644); err != nil {
				t.Fatal(err)
			}
			storeUnmount(t, m)
		}
	}
	var usage struct {
		Containers []struct {
			Name        string `json:"name"`
			Size        int64  `json:"size"`
			VirtualSize int64  `json:"virtualSize"`
		} `json:"containers"`
		TotalSize int64 `json:"totalSize"`
		TotalDisk int64 `json:"totalDisk"`
	}
	if err := json.Unmarshal([]byte(s.run("ps", "--json")), &usage); err != nil {
		t.Fatal(err)
	}
	imageSize := int64(1000 + len("ID=ubuntu\n") + len("docker\n") + len("echo hello\n"))
	if len(usage.Containers) != 5 {
		t.Fatalf("%d containers, want 5", len(usage.Containers))
	}
	for i, c := range usage.Containers {
		wantSize := int64(0)
		if i < 3 {
			wantSize = int64(len(small))
		}
		if c.Size != wantSize || c.VirtualSize != imageSize+wantSize {
			t.Errorf("%s: size %d, virtual %d; want %d and %d", c.Name, c.Size, c.VirtualSize, wantSize, imageSize+wantSize)
		}
	}
	if want := 3*int64(len(small)) + imageSize; usage.TotalDisk != want {
		t.Errorf("total on disk %d, want %d (the image's layers once)", usage.TotalDisk, want)
	}
	table := s.run("ps", "--size")
	for _, want := range []string{"my_container_1", "13 B", "0 B", "TOTAL"} {
		if !strings.Contains(table, want) {
			t.Errorf("ps --size lacks %q:\n%s", want, table)
		}
	}
	t.Logf("cowfs ps --size:\n%s", table)
	t.Logf("cowfs image ls:\n%s", s.run("image", "ls"))
	// The two images share the base layers, stored once.
	layers, _ := os.ReadDir(filepath.Join(s.root, "layers"))
	if len(layers) != 3 {
		t.Errorf("%d layer trees stored, want 3 (two shared, one the final image's own)", len(layers))
	}
	if _, errOut, err := s.try("image", "rm", "acme/my-final-image:1.0"); err == nil || !strings.Contains(errOut, "used by container") {
		t.Errorf("image rm of an image in use: %v %q", err, errOut)
	}
	if _, errOut, err := s.try("layer", "rm", baseLayers[0]); err == nil || !strings.Contains(errOut, "used by image") {
		t.Errorf("layer rm of a layer in use: %v %q", err, errOut)
	}
}
