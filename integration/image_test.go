package integration

// A small real container image for the client tests (rootfs_test.go,
// podman_test.go): a base layer that can boot a shell (busybox-static, or a
// debootstrap'd Debian under COWFS_TEST_DEBIAN=1), and two layers on top that
// add, override and delete files with char 0/0 whiteouts and an opaque
// directory, in the kernel's on-disk format so that kernel overlayfs and cowfs
// mount the very same lower directories.

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testImage is the image's layer directories, bottom first, and what a
// workload on it must find deleted.
type testImage struct {
	root   string
	base   string // the base layer
	layer1 string // adds and overrides
	layer2 string // overrides, whiteouts, an opaque directory
	debian bool   // the base is Debian (dpkg works)
	// hidden are absolute paths the image itself deletes: names whited out
	// by layer2 and names under its opaque directory.
	hidden []string
}

// lowers is the lowerdir list, topmost first.
func (im *testImage) lowers() []string { return []string{im.layer2, im.layer1, im.base} }

// debianCache is where the debootstrap'd base is kept between runs (it takes
// about 1.5 minutes and 200 MB to build); a stamp file says it is complete.
const debianCache = "/var/tmp/cowfs-debian-bookworm-minbase"

// useDebian says whether the Debian variant runs, and why not.
func useDebian() (bool, string) {
	if os.Getenv("COWFS_TEST_DEBIAN") == "" {
		return false, "the Debian (debootstrap --variant=minbase) base runs with COWFS_TEST_DEBIAN=1 " +
			"(the first run downloads about 200 MB and takes about 1.5 minutes; it is cached in " + debianCache + ")"
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return false, "COWFS_TEST_DEBIAN=1 needs debootstrap (apt-get install debootstrap)"
	}
	return true, ""
}

// buildTestImage writes the image into a fresh directory removed at cleanup.
func buildTestImage(t *testing.T, debian bool) *testImage {
	t.Helper()
	root, err := os.MkdirTemp("", "cowfs-image-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	im := &testImage{root: root, debian: debian,
		base: filepath.Join(root, "base"), layer1: filepath.Join(root, "layer1"), layer2: filepath.Join(root, "layer2")}
	start := time.Now()
	victim := "usr/bin/vi"
	if debian {
		copyDebianBase(t, im.base)
		victim = "usr/bin/tac"
	} else {
		buildBusyboxBase(t, im.base)
	}
	if _, err := os.Lstat(filepath.Join(im.base, victim)); err != nil {
		t.Fatalf("base layer: %v", err)
	}
	writeLayer(t, im.layer1, imageLayer1(), true)
	writeLayer(t, im.layer2, imageLayer2(victim), true)
	im.hidden = imageHidden(victim)
	if debian {
		deb := buildTinyDeb(t)
		if err := os.MkdirAll(filepath.Join(im.layer1, "opt/pkgs"), 0o755); err != nil {
			t.Fatal(err)
		}
		copyFile(t, deb, filepath.Join(im.layer1, "opt/pkgs/cowfs-hello.deb"))
	}
	t.Logf("image built in %v (base %s)", time.Since(start).Round(time.Millisecond), map[bool]string{true: "Debian minbase", false: "busybox"}[debian])
	return im
}

// buildBusyboxBase makes a merged-/usr tree that boots busybox-static's sh.
func buildBusyboxBase(t *testing.T, dir string) {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("needs busybox-static (apt-get install busybox-static)")
	}
	if out, err := exec.Command("ldd", bb).CombinedOutput(); err == nil && !bytes.Contains(out, []byte("not a dynamic")) {
		t.Skipf("%s is not statically linked (install busybox-static)", bb)
	}
	for _, d := range []string{"usr/bin", "etc", "root", "tmp", "dev", "proc", "sys", "run", "var/tmp", "usr/local/bin", "home/app"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []string{"bin", "sbin", "usr/sbin"} {
		target := "usr/bin"
		if l == "usr/sbin" {
			target = "bin"
		}
		if err := os.Symlink(target, filepath.Join(dir, l)); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(bb, "--install", "-s", filepath.Join(dir, "usr/bin")).CombinedOutput(); err != nil {
		t.Fatalf("busybox --install -s: %v\n%s", err, out)
	}
	os.Remove(filepath.Join(dir, "usr/bin/busybox"))
	copyFile(t, bb, filepath.Join(dir, "usr/bin/busybox"))
	for name, content := range map[string]string{
		"etc/passwd":   "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":    "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n",
		"etc/hostname": "cowfs-image\n",
		"etc/motd":     "base motd\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{"tmp", 0o1777}, {"var/tmp", 0o1777}, {"root", 0o700}} {
		if err := os.Chmod(filepath.Join(dir, c.path), c.mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(dir, "home/app"), 1000, 1000); err != nil {
		t.Fatal(err)
	}
}

// copyDebianBase copies the cached debootstrap tree (building it if missing)
// into dir with cp -a (owners, modes, links, xattrs kept).
func copyDebianBase(t *testing.T, dir string) {
	t.Helper()
	stamp := debianCache + ".complete"
	if _, err := os.Stat(stamp); err != nil {
		os.RemoveAll(debianCache)
		start := time.Now()
		out, err := exec.Command("debootstrap", "--variant=minbase", "bookworm", debianCache, "http://deb.debian.org/debian").CombinedOutput()
		if err != nil {
			os.RemoveAll(debianCache)
			t.Skipf("debootstrap failed (no network?): %v\n%s", err, lastLines(out, 20))
		}
		t.Logf("debootstrap --variant=minbase bookworm took %v", time.Since(start).Round(time.Second))
		if err := os.WriteFile(stamp, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("cp", "-a", debianCache, dir).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s: %v\n%s", debianCache, err, out)
	}
}

// buildTinyDeb builds cowfs-hello_1.0_all.deb with dpkg-deb: a script, a
// config file and a doc file.
func buildTinyDeb(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("needs dpkg-deb")
	}
	d := t.TempDir()
	pkg := filepath.Join(d, "pkg")
	for name, content := range map[string]string{
		"DEBIAN/control":                         "Package: cowfs-hello\nVersion: 1.0\nArchitecture: all\nMaintainer: cowfs tests <tests@cowfs.invalid>\nDescription: a package the cowfs client tests install\n",
		"usr/bin/cowfs-hello":                    "#!/bin/sh\necho hello from a .deb\n",
		"etc/cowfs-hello.conf":                   "greeting=hello\n",
		"usr/share/doc/cowfs-hello/README":       "installed by dpkg inside a cowfs rootfs\n",
		"usr/share/cowfs-hello/data/payload.txt": strings.Repeat("payload\n", 1000),
	} {
		p := filepath.Join(pkg, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(pkg, "usr/bin/cowfs-hello"), 0o755); err != nil {
		t.Fatal(err)
	}
	deb := filepath.Join(d, "cowfs-hello_1.0_all.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", pkg, deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --build: %v\n%s", err, out)
	}
	return deb
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v\n%s", from, to, err, out)
	}
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// lowerSnapshots records every lower layer (times and inode numbers
// included), to show after the test that none changed.
func (im *testImage) lowerSnapshots() []snapshot {
	var s []snapshot
	for _, l := range im.lowers() {
		s = append(s, takeSnapshot(l, lowerDir))
	}
	return s
}

// checkLowersUnchanged fails t when a lower layer differs from before.
func (im *testImage) checkLowersUnchanged(t *testing.T, before []snapshot) {
	t.Helper()
	for i, l := range im.lowers() {
		if d := diffSnapshots("before", before[i], "after", takeSnapshot(l, lowerDir)); d != "" {
			t.Errorf("lower layer %s changed:\n%s", l, d)
		}
	}
}

// mountImage mounts the image as kind over a fresh upper and work directory
// (in one fresh directory removed at cleanup), with the harness's testMount:
// it is unmounted in t.Cleanup even when the test fails.
func mountImage(t *testing.T, kind mountKind, im *testImage, extra string) *testMount {
	t.Helper()
	requireMounts(t)
	if kind == fuseKind && buildErr != nil {
		t.Fatalf("no FUSE program to test: %v", buildErr)
	}
	root, err := os.MkdirTemp("", "cowfs-rootfs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	m := &testMount{t: t, kind: kind, root: root, dir: filepath.Join(root, "mnt"), lowers: im.lowers(),
		upper: filepath.Join(root, "upper"), work: filepath.Join(root, "work"), extra: extra}
	for _, d := range []string{m.upper, m.work, m.dir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(m.cleanup)
	m.mount()
	return m
}

// imageLayer1 adds files and directories over the base and overrides one.
func imageLayer1() layer {
	return layer{
		"etc/motd":                    file("layer1 motd\n"),
		"etc/removed-by-layer2":       file("soon gone\n"),
		"app/bin/hello.sh":            file("#!/bin/sh\necho hello from layer1\n").mode(0o755),
		"app/etc/config":              file("version=1\n"),
		"app/delete-me":               file("delete me\n"),
		"app/rename-src":              file("rename me\n"),
		"app/owned":                   file("owned\n"),
		"app/chmod-me":                file("chmod me\n").mode(0o644),
		"app/big.bin":                 file(strings.Repeat("0123456789abcdef", 2<<20/16)),
		"var/lib/data/a":              file("a\n"),
		"var/lib/data/b":              file("b\n"),
		"var/lib/data/sub/c":          file("c\n"),
		"var/lib/data/hl1":            file("lower hard link\n"),
		"var/lib/data/hl2":            hardlink("var/lib/data/hl1"),
		"var/lib/links/l1":            file("two names\n"),
		"var/lib/links/l2":            hardlink("var/lib/links/l1"),
		"opq/keep":                    file("hidden by layer2's opaque dir\n"),
		"opq/old1":                    file("old1\n"),
		"opq/sub/x":                   file("x\n"),
		"cache/f1":                    file("f1\n"),
		"cache/deep/f2":               file("f2\n"),
		"usr/share/doc/base/README":   file("base docs\n"),
		"usr/share/doc/base/old-news": file("old news\n"),
		"srv":                         dir(),
	}
}

// imageLayer2 overrides, whites out (a file of layer1, a directory of
// layer1, victim of the base) and makes /opq opaque.
func imageLayer2(victim string) layer {
	return layer{
		"etc/motd":                    file("layer2 motd\n"),
		"etc/removed-by-layer2":       whiteout(),
		"app/etc/config":              file("version=2\n"),
		"app/etc/extra":               file("extra\n"),
		"usr/share/doc/base/old-news": whiteout(),
		"cache":                       whiteout(),
		"opq":                         dir().opaqueDir(),
		"opq/new":                     file("new in layer2\n"),
		victim:                        whiteout(),
	}
}

// imageHidden are the names layer2 deletes.
func imageHidden(victim string) []string {
	return []string{"/etc/removed-by-layer2", "/usr/share/doc/base/old-news", "/cache", "/cache/f1",
		"/cache/deep", "/cache/deep/f2", "/opq/keep", "/opq/old1", "/opq/sub", "/opq/sub/x", "/" + victim}
}
