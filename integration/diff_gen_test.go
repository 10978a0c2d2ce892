package integration

import (
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// diffNames are the name components random trees and operations use. Few,
// so that layers overlap and merge; odd ones (space, newline, non-UTF-8,
// leading dot) included.
var diffNames = []string{"a", "b", "c d", "n\nl", "\xff\xfe", "e.txt", "sub", ".h"}

// diffXattrs are the user xattr names operations and fixtures use.
var diffXattrs = []string{"user.a", "user.bb", "user.c"}

// avoidOpenBugs lists cowfs bugs found by this tester and not fixed yet
// whose inputs the generator leaves out, so that the random runs find other
// bugs instead. Each has a skipped reproducer in diff_regress_test.go; set a
// field to false once the bug is fixed. COWFS_DIFF_OPEN_BUGS=1 clears them
// all (see fixedOpenBugs), to look for the bugs again.
var avoidOpenBugs = struct {
	// modeZero: cowfs shows a file of mode 0000 as 0644 (stat, create,
	// chmod); the generator uses no mode 0.
	modeZero bool
	// mergedDirNlink: cowfs reports the upper directory's st_nlink for a
	// merged directory where the kernel reports 1 (ovl_getattr: the count
	// is unknown; find relies on it). runDiff compares no directory nlink.
	mergedDirNlink bool
	// renameDirOverDir: renaming a lower directory onto a non-empty
	// directory gives ENOTEMPTY where the kernel gives EXDEV (ovl_rename
	// checks ovl_can_move first). The generator renames no directory onto
	// an existing directory.
	renameDirOverDir bool
}{}

// genStack makes 1-5 random lowers (topmost first) and a random upper.
func genStack(rng *rand.Rand) (lowers []layer, upper layer) {
	n := 1 + rng.IntN(5)
	for i := 0; i < n; i++ {
		lowers = append(lowers, genLayer(rng, 2+rng.IntN(10), true))
	}
	upper = genLayer(rng, rng.IntN(7), false)
	dropUnmergedWhiteouts(lowers, upper)
	return lowers, upper
}

// dropUnmergedWhiteouts removes whiteouts from directories that only their
// own layer provides (see intendedDifferences, "whiteouts in unmerged
// directories"). The shrinker calls it again after dropping entries.
func dropUnmergedWhiteouts(lowers []layer, upper layer) {
	all := append([]layer{upper}, lowers...) // top first
	// Until nothing changes: dropping a whiteout can leave another directory
	// unmerged (the whiteout hid a path that merged it).
	for dropped := true; dropped; {
		dropped = false
		for i, l := range all {
			for p, e := range l {
				if e.kind != kindWhiteout && e.kind != kindWhiteoutFile && e.kind != kindWhiteoutXattr {
					continue
				}
				c := contributors(all, filepath.Dir(p))
				if len(c) == 1 && c[0] == i {
					delete(l, p)
					dropped = true
				}
			}
		}
	}
}

// contributors lists the layers (indexes into all, top first) that make up
// the merged directory d at mount time, by the merge rule: a non-directory
// or whiteout stops the walk, an opaque directory stops it after itself.
func contributors(all []layer, d string) []int {
	if d == "." {
		c := make([]int, len(all))
		for i := range c {
			c[i] = i
		}
		return c
	}
	var out []int
	for _, i := range contributors(all, filepath.Dir(d)) {
		e, ok := all[i][d]
		switch {
		case ok && e.kind == kindDir:
			out = append(out, i)
			if e.opaque || e.opaqueFile || e.opaqueAttr != "" {
				return out
			}
		case ok:
			return out
		case hasPrefixKey(all[i], d+"/"):
			out = append(out, i) // made by writeLayer's MkdirAll
		}
	}
	return out
}

func hasPrefixKey(l layer, prefix string) bool {
	for q := range l {
		if strings.HasPrefix(q, prefix) {
			return true
		}
	}
	return false
}

// modes filters mode choices by avoidOpenBugs.
func modes(m ...uint32) []uint32 {
	if !avoidOpenBugs.modeZero {
		return m
	}
	var out []uint32
	for _, x := range m {
		if x&0o777 != 0 {
			out = append(out, x)
		}
	}
	return out
}

func pickMode(rng *rand.Rand, m ...uint32) uint32 {
	m = modes(m...)
	return m[rng.IntN(len(m))]
}

func genPath(rng *rand.Rand) string {
	depth := 1 + rng.IntN(3)
	if rng.IntN(2) == 0 {
		depth = 1
	}
	parts := make([]string, depth)
	for i := range parts {
		parts[i] = diffNames[rng.IntN(len(diffNames))]
	}
	return strings.Join(parts, "/")
}

// genLayer makes a consistent tree of about n entries: no entry below a
// non-directory, hard links to files of the same layer.
func genLayer(rng *rand.Rand, n int, lower bool) layer {
	l := layer{}
	parentsOK := func(p string) bool {
		for d := filepath.Dir(p); d != "."; d = filepath.Dir(d) {
			if e, ok := l[d]; ok && e.kind != kindDir {
				return false
			}
		}
		return true
	}
	hasChildren := func(p string) bool {
		for q := range l {
			if strings.HasPrefix(q, p+"/") {
				return true
			}
		}
		return false
	}
	for tries := 0; len(l) < n && tries < 4*n; tries++ {
		p := genPath(rng)
		if _, ok := l[p]; ok || !parentsOK(p) {
			continue
		}
		e := genEntry(rng, l, p, lower)
		if hasChildren(p) {
			e = genDir(rng, lower)
		}
		l[p] = e
	}
	return l
}

func genEntry(rng *rand.Rand, l layer, p string, lower bool) entry {
	switch x := rng.IntN(100); {
	case x < 40:
		return genFile(rng)
	case x < 60:
		return genDir(rng, lower)
	case x < 68:
		return symlink(genTarget(rng))
	case x < 74:
		var files []string
		for q, e := range l {
			if e.kind == kindFile {
				files = append(files, q)
			}
		}
		if len(files) == 0 {
			return genFile(rng)
		}
		sort.Strings(files)
		return hardlink(files[rng.IntN(len(files))])
	case x < 77:
		return fifo().mode([]uint32{0o644, 0o600}[rng.IntN(2)])
	case x < 85:
		return whiteout()
	case x < 93:
		return whiteoutFile()
	default:
		// Xattr whiteouts (whiteoutXattr) are left out: the kernel's readdir
		// lists them until a lookup has marked the layer as having them
		// (ovl_layer_set_xwhiteouts), so it is no oracle for them (seed 1021).
		return whiteout()
	}
}

// genTarget is a relative symlink target without "..": it may dangle but
// never leaves the mount, so writes through it stay in the test's layers.
func genTarget(rng *rand.Rand) string {
	if rng.IntN(8) == 0 {
		return "."
	}
	t := diffNames[rng.IntN(len(diffNames))]
	if rng.IntN(3) == 0 {
		t += "/" + diffNames[rng.IntN(len(diffNames))]
	}
	return t
}

func genFile(rng *rand.Rand) entry {
	var e entry
	switch x := rng.IntN(100); {
	case x < 10:
		e = file("")
	case x < 80:
		e = file(string(fill(int64(1+rng.IntN(40)), byte(rng.IntN(26)))))
	case x < 96:
		size := int64(1 + rng.IntN(3<<20))
		ext := map[int64]string{}
		for i := 0; i < 1+rng.IntN(3); i++ {
			off := rng.Int64N(size)
			ext[off] = string(fill(int64(1+rng.IntN(20)), byte(i)))
		}
		e = sparse(size, ext)
	default:
		e = file(patterned(2<<20 + rng.IntN(3<<20)))
	}
	switch x := rng.IntN(100); {
	case x < 8:
		e = e.mode(pickMode(rng, 0, 0o400))
	case x < 16:
		e = e.mode(0o600)
	case x < 24:
		e = e.mode(0o755)
	case x < 27:
		e = e.mode(0o4755)
	}
	return genMeta(rng, e)
}

func genDir(rng *rand.Rand, lower bool) entry {
	e := dir()
	switch x := rng.IntN(100); {
	case x < 10:
		e = e.mode(0o555)
	case x < 15:
		e = e.mode(0o700)
	case x < 18:
		e = e.mode(0o1777)
	}
	switch x := rng.IntN(100); {
	case x < 6:
		e = e.opaqueDir()
	case x < 12:
		e = e.opaqueByFile()
	case x < 15:
		e = e.opaqueByXattr(userOpaqueXattr)
	case x < 17 && lower:
		e = e.opaqueByXattr("user.fuseoverlayfs.opaque")
	}
	return genMeta(rng, e)
}

func genMeta(rng *rand.Rand, e entry) entry {
	if rng.IntN(7) == 0 {
		e = e.owner(1000, 1000+rng.IntN(2))
	}
	if rng.IntN(5) == 0 {
		e = e.xattr(diffXattrs[rng.IntN(len(diffXattrs))], string(fill(int64(rng.IntN(12)), 3)))
	}
	return e
}

// treeEntry is one path of the kernel's merged view, which operations pick
// their paths from.
type treeEntry struct {
	path string
	typ  uint32
}

// opGen draws operations, mostly on paths that exist in the merged view.
type opGen struct {
	rng  *rand.Rand
	tree []treeEntry // the kernel's merged view now, "." first
	// metacopy: the sequence runs with metadata-only copy-up, and moves no
	// directory (see TestDifferentialMetacopy).
	metacopy bool
}

func (g *opGen) pick(want func(uint32) bool) string {
	var c []string
	for _, e := range g.tree {
		if e.path != "." && (want == nil || want(e.typ)) {
			c = append(c, e.path)
		}
	}
	if len(c) == 0 || g.rng.IntN(10) == 0 {
		return genPath(g.rng)
	}
	return c[g.rng.IntN(len(c))]
}

// typeOf is the type of path in the merged view, 0 if absent.
func (g *opGen) typeOf(path string) uint32 {
	for _, e := range g.tree {
		if e.path == path {
			return e.typ
		}
	}
	return 0
}

// throughSymlink reports whether a directory component of path is a symlink in the
// merged view (the model knows paths only as they are spelled, not where they lead).
func (g *opGen) throughSymlink(path string) bool {
	for d := filepath.Dir(path); d != "." && d != "/"; d = filepath.Dir(d) {
		if g.typeOf(d) == unix.S_IFLNK {
			return true
		}
	}
	return false
}

func isReg(t uint32) bool { return t == unix.S_IFREG }
func isDir(t uint32) bool { return t == unix.S_IFDIR }

// existing is any existing path, a regular file three times in four when
// want is isReg.
func (g *opGen) existing(want func(uint32) bool) string {
	if want != nil && g.rng.IntN(4) == 0 {
		want = nil
	}
	return g.pick(want)
}

// fresh is a name in an existing directory, which may or may not exist.
func (g *opGen) fresh() string {
	d := g.pick(isDir)
	if g.rng.IntN(3) == 0 {
		d = "."
	}
	n := diffNames[g.rng.IntN(len(diffNames))]
	if g.rng.IntN(3) == 0 {
		n += string(rune('0' + g.rng.IntN(10)))
	}
	return filepath.Join(d, n)
}

func (g *opGen) size() int64 {
	switch x := g.rng.IntN(100); {
	case x < 75:
		return int64(g.rng.IntN(64))
	case x < 95:
		return int64(g.rng.IntN(64 << 10))
	default:
		return int64(g.rng.IntN(4 << 20))
	}
}

func (g *opGen) writeLen() int64 {
	if g.rng.IntN(10) == 0 {
		return int64(1 + g.rng.IntN(256<<10))
	}
	return int64(1 + g.rng.IntN(48))
}

// opWeights is the operation mix, in dopKind order.
var opWeights = [numDopKinds]int{
	dCreate: 8, dOpen: 10, dWrite: 10, dAppend: 4, dTruncate: 5, dFallocate: 3, dRead: 8,
	dChmod: 4, dChown: 3, dUtimes: 2, dSetxattr: 4, dRemovexattr: 2, dGetxattr: 2, dListxattr: 2,
	dMkdir: 5, dRmdir: 4, dUnlink: 6, dRename: 9, dLink: 3, dSymlink: 3, dMkfifo: 2, dReadlink: 2,
	dUnlinkOpen: 3, dTwoFds: 3, dReaddir: 3,
}

// metacopyWeights are opWeights with the operations that copy only metadata up
// under metacopy=on made three times as likely, so that later operations meet
// metacopy files (reads, writes and truncates that copy their data up).
var metacopyWeights = func() [numDopKinds]int {
	w := opWeights
	for _, k := range []dopKind{dChmod, dChown, dUtimes, dSetxattr, dRemovexattr} {
		w[k] *= 3
	}
	return w
}()

func (g *opGen) next() dop {
	weights := &opWeights
	if g.metacopy {
		weights = &metacopyWeights
	}
	total := 0
	for _, w := range weights {
		total += w
	}
	x := g.rng.IntN(total)
	var k dopKind
	for k = 0; x >= weights[k]; k++ {
		x -= weights[k]
	}
	r := g.rng
	op := dop{kind: k, seed: byte(r.IntN(26))}
	switch k {
	case dCreate:
		op.path = g.fresh()
		if r.IntN(3) == 0 {
			op.path = g.existing(nil)
		}
		if r.IntN(20) == 0 {
			// At the root, which is always upper, so that the kernel's
			// creating it copies nothing up (see intendedDifferences).
			op.path = whPrefix + filepath.Base(op.path)
		}
		if r.IntN(2) == 0 {
			op.flags |= unix.O_EXCL
		}
		if r.IntN(3) == 0 {
			op.flags |= unix.O_TRUNC
		}
		op.mode = pickMode(r, 0o644, 0o600, 0, 0o755)
		op.n = g.writeLen() * int64(r.IntN(2))
	case dOpen:
		op.path = g.existing(isReg)
		op.flags = []int{unix.O_RDONLY, unix.O_WRONLY, unix.O_RDWR}[r.IntN(3)]
		for _, f := range []int{unix.O_TRUNC, unix.O_APPEND, unix.O_CREAT, unix.O_EXCL, unix.O_DIRECTORY, unix.O_NOFOLLOW} {
			if r.IntN(5) == 0 {
				op.flags |= f
			}
		}
		if op.flags&unix.O_CREAT != 0 && r.IntN(2) == 0 {
			op.path = g.fresh()
		}
		op.mode = 0o644
		op.off = g.size()
		op.n = g.writeLen()
	case dWrite, dUnlinkOpen, dTwoFds:
		op.path = g.existing(isReg)
		op.off = g.size()
		op.n = g.writeLen()
	case dAppend:
		op.path = g.existing(isReg)
		op.n = g.writeLen()
	case dTruncate:
		op.path = g.existing(isReg)
		op.n = g.size()
	case dFallocate:
		op.path = g.existing(isReg)
		op.flags = []int{0, unix.FALLOC_FL_KEEP_SIZE, unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, unix.FALLOC_FL_ZERO_RANGE}[r.IntN(4)]
		op.off = g.size()
		op.n = 1 + g.size()
	case dRead, dReadlink:
		op.path = g.existing(nil)
	case dChmod:
		op.path = g.existing(nil)
		op.mode = pickMode(r, 0, 0o555, 0o600, 0o644, 0o700, 0o755, 0o1777, 0o2755, 0o4755)
	case dChown:
		op.path = g.existing(nil)
		op.uid, op.gid = []int{0, 1000, 1001}[r.IntN(3)], []int{0, 1000, 1001}[r.IntN(3)]
	case dUtimes:
		op.path = g.existing(nil)
		if r.IntN(2) == 0 {
			op.flags = unix.AT_SYMLINK_NOFOLLOW
		}
	case dSetxattr:
		op.path = g.existing(nil)
		op.name = diffXattrs[r.IntN(len(diffXattrs))]
		op.flags = []int{0, 0, unix.XATTR_CREATE, unix.XATTR_REPLACE}[r.IntN(4)]
		op.n = int64(r.IntN(20))
	case dRemovexattr, dGetxattr:
		op.path = g.existing(nil)
		op.name = diffXattrs[r.IntN(len(diffXattrs))]
	case dListxattr:
		op.path = g.existing(nil)
	case dMkdir:
		op.path = g.fresh()
		if r.IntN(20) == 0 {
			op.path = whPrefix + filepath.Base(op.path)
		}
		op.mode = []uint32{0o755, 0o700, 0o555}[r.IntN(3)]
	case dRmdir:
		op.path = g.existing(isDir)
	case dUnlink:
		op.path = g.existing(nil)
	case dRename:
		op.path = g.existing(nil)
		op.path2 = g.fresh()
		if r.IntN(2) == 0 {
			op.path2 = g.existing(nil)
		}
		op.flags = []int{0, 0, 0, unix.RENAME_NOREPLACE, unix.RENAME_EXCHANGE}[r.IntN(5)]
		if avoidOpenBugs.renameDirOverDir && g.typeOf(op.path) == unix.S_IFDIR && g.typeOf(op.path2) == unix.S_IFDIR {
			op.path2 = filepath.Join(filepath.Dir(op.path2), "new")
		}
		if g.metacopy { // moves no directory (see TestDifferentialMetacopy)
			for i := 0; i < 16 && isDir(g.typeOf(op.path)); i++ {
				op.path = g.existing(isReg)
			}
			for i := 0; i < 16 && isDir(g.typeOf(op.path2)); i++ {
				op.path2 = g.fresh()
			}
			if isDir(g.typeOf(op.path)) || isDir(g.typeOf(op.path2)) ||
				g.throughSymlink(op.path) || g.throughSymlink(op.path2) {
				// A path through a symlink may lead to a directory the model does not
				// know by that path (b -> "." makes b/sub the directory sub).
				op.path2 = op.path // a rename onto itself changes nothing
			}
		}
	case dLink:
		op.path = g.existing(isReg)
		op.path2 = g.fresh()
	case dSymlink:
		op.path = g.fresh()
		op.path2 = genTarget(r)
	case dMkfifo:
		op.path = g.fresh()
		op.mode = 0o644
	case dReaddir:
		op.path = g.existing(isDir)
		op.path2 = filepath.Join(op.path, diffNames[r.IntN(len(diffNames))])
	}
	return op
}
