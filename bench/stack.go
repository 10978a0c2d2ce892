package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// stack is the cached lower layers: a rootfs-like tree sampled from this machine's
// /usr, split over three layers (bottom first) with overlapping names and whiteouts,
// plus big files of real (random) data in the bottom layer. Its manifest is written
// last, so a directory without one is an interrupted build and is rebuilt.
type stack struct {
	Dir        string   // the stack's cache directory
	Layers     []string // lower layer directories, bottom first
	Files      []string // every non-directory of the merged tree, relative to its root
	Regular    []string // the regular files among Files
	LayerFiles []int    // non-directories stored in each layer (whiteouts included)
	Overlaps   int      // names stored in more than one layer
	Whiteouts  int      // names of a lower layer hidden by a whiteout in the top layer
	TarDir     string   // the big directory the tar workload reads
	ReadFile   string   // big lower file for sequential reads
	AppendFile string   // big lower file for the copy-up append
	FioFile    string   // lower file fio works on once copied up
	Archive    string   // tar archive the create workloads unpack (absolute)
	ArchiveN   int      // files in Archive
}

// source is a part of /usr sampled into one layer.
type source struct {
	dir   string  // absolute directory on this machine
	share float64 // its share of the files of the stack
	layer int     // the layer it goes into: 0 is the bottom
}

// maxSampled is the largest file copied from /usr: the stack is about metadata and
// small files; the big files are separate.
const maxSampled = 1 << 20

func stackSources() []source {
	return []source{
		{"/usr/share", 0.52, 0},
		{"/usr/bin", 0.02, 0},
		{"/usr/sbin", 0.01, 0},
		{"/usr/lib", 0.35, 1},
		{"/usr/include", 0.10, 2},
	}
}

const manifestName = "manifest.json"

func loadOrBuildStack(ctx context.Context, cfg *config) (*stack, error) {
	dir := filepath.Join(cfg.cache, fmt.Sprintf("stack-v1-%dfiles-%dMiB-fio%dMiB-untar%d",
		cfg.files, cfg.bigSize>>20, cfg.fioSize>>20, cfg.untarFiles))
	if b, err := os.ReadFile(filepath.Join(dir, manifestName)); err == nil {
		st := &stack{}
		if err := json.Unmarshal(b, st); err == nil && st.Dir == dir {
			return st, nil
		}
	}
	log.Printf("building the layer stack in %s (once; it is kept for later runs)", dir)
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	st := &stack{Dir: dir}
	for i := 0; i < 3; i++ {
		st.Layers = append(st.Layers, filepath.Join(dir, fmt.Sprintf("layer%d", i)))
		if err := os.MkdirAll(st.Layers[i], 0o755); err != nil {
			return nil, err
		}
	}
	if err := st.fillLayers(ctx, cfg.files); err != nil {
		return nil, err
	}
	if err := st.writeBigFiles(cfg); err != nil {
		return nil, err
	}
	if err := st.writeArchive(ctx, cfg.untarFiles); err != nil {
		return nil, err
	}
	if err := syncFS(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	tmp := filepath.Join(dir, manifestName+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return nil, err
	}
	return st, os.Rename(tmp, filepath.Join(dir, manifestName))
}

// candidates lists the regular files (up to maxSize) and symlinks under root, in
// lexical order, relative to /.
func candidates(root string, maxSize int64) []string {
	var out []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable parts are skipped
		}
		if strings.HasPrefix(d.Name(), ".wh.") {
			return nil // a whiteout name for cowfs and fuse-overlayfs, not for the kernel
		}
		switch {
		case d.Type().IsRegular():
			if info, err := d.Info(); err == nil && info.Size() <= maxSize {
				out = append(out, strings.TrimPrefix(p, "/"))
			}
		case d.Type()&fs.ModeSymlink != 0:
			out = append(out, strings.TrimPrefix(p, "/"))
		}
		return nil
	})
	return out
}

// sample takes n names spread evenly over names (all of them if there are fewer).
func sample(names []string, n int) []string {
	if n >= len(names) {
		return names
	}
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		out = append(out, names[i*len(names)/n])
	}
	return out
}

// fillLayers copies about n files from /usr into the layers: each source into its
// layer; every 10th name of layer 0 again into layer 1 and every 10th of layer 1 into
// layer 2 (the upper copy overrides); every 100th other name of layer 0 is hidden by
// a whiteout (char 0/0) in layer 2.
func (st *stack) fillLayers(ctx context.Context, n int) error {
	perLayer := make([][]string, 3)
	for _, s := range stackSources() {
		perLayer[s.layer] = append(perLayer[s.layer], sample(candidates(s.dir, maxSampled), int(s.share*float64(n)))...)
	}
	st.LayerFiles = make([]int, 3)
	merged := map[string]bool{} // name -> regular file
	put := func(layer int, rel string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		regular, err := copyEntry("/"+rel, filepath.Join(st.Layers[layer], rel))
		if err != nil {
			return err
		}
		st.LayerFiles[layer]++
		merged[rel] = regular
		return nil
	}
	for layer, names := range perLayer {
		for i, rel := range names {
			if err := put(layer, rel); err != nil {
				return err
			}
			if layer < 2 && i%10 == 5*layer {
				if err := put(layer+1, rel); err != nil {
					return err
				}
				st.Overlaps++
			}
		}
	}
	for i, rel := range perLayer[0] {
		if i%100 != 55 {
			continue
		}
		wh := filepath.Join(st.Layers[2], rel)
		if err := os.MkdirAll(filepath.Dir(wh), 0o755); err != nil {
			return err
		}
		if err := unix.Mknod(wh, unix.S_IFCHR, 0); err != nil {
			return fmt.Errorf("whiteout %s: %w", wh, err)
		}
		st.LayerFiles[2]++
		st.Whiteouts++
		delete(merged, rel)
	}
	for rel, regular := range merged {
		st.Files = append(st.Files, rel)
		if regular {
			st.Regular = append(st.Regular, rel)
		}
	}
	slices.Sort(st.Files)
	slices.Sort(st.Regular)
	st.TarDir = "usr/share"
	return nil
}

// copyEntry copies a regular file (data and mode) or a symlink (its target) from src
// to dst, creating dst's parents. It reports whether it was a regular file.
func copyEntry(src, dst string) (bool, error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return false, err
	}
	info, err := os.Lstat(src)
	if err != nil {
		return false, err
	}
	if info.Mode()&fs.ModeSymlink != 0 {
		target, err := os.Readlink(src)
		if err != nil {
			return false, err
		}
		return false, os.Symlink(target, dst)
	}
	in, err := os.Open(src)
	if err != nil {
		return false, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, info.Mode().Perm())
	if err != nil {
		return false, err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return false, err
	}
	return true, out.Close()
}

// writeBigFiles writes the big files into the bottom layer with random data, so
// that reads read real blocks (not holes) and nothing can be compressed or shared.
func (st *stack) writeBigFiles(cfg *config) error {
	st.ReadFile, st.AppendFile, st.FioFile = "big/read.bin", "big/append.bin", "big/fio.bin"
	for _, f := range []struct {
		rel  string
		size int64
		seed uint64
	}{{st.ReadFile, cfg.bigSize, 1}, {st.AppendFile, cfg.bigSize, 2}, {st.FioFile, cfg.fioSize, 3}} {
		p := filepath.Join(st.Layers[0], f.rel)
		log.Printf("writing %s (%d MiB of random data)", p, f.size>>20)
		if err := writeRandom(p, f.size, f.seed); err != nil {
			return err
		}
		st.Files = append(st.Files, f.rel)
		st.Regular = append(st.Regular, f.rel)
		st.LayerFiles[0]++
	}
	return nil
}

func writeRandom(path string, size int64, seed uint64) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	var key [32]byte
	key[0] = byte(seed)
	src := rand.NewChaCha8(key)
	w := bufio.NewWriterSize(f, 4<<20)
	if _, err := io.CopyN(w, src, size); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writeArchive makes the tar archive of n small files (up to 64 KiB, sampled from
// /usr/lib and /usr/share) that the create workloads unpack into the mount.
func (st *stack) writeArchive(ctx context.Context, n int) error {
	names := append(candidates("/usr/lib", 64<<10), candidates("/usr/share", 64<<10)...)
	names = sample(names, n)
	list := filepath.Join(st.Dir, "archive.list")
	if err := os.WriteFile(list, []byte(strings.Join(names, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	st.Archive = filepath.Join(st.Dir, "archive.tar")
	st.ArchiveN = len(names)
	cmd := exec.CommandContext(ctx, "tar", "-cf", st.Archive, "--no-recursion", "-C", "/", "-T", list)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("tar: %v: %s", err, out)
	}
	return nil
}
