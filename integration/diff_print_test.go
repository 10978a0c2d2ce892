package integration

import (
	"fmt"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// goCase prints a differential case as a behaviourCase literal, ready to
// paste into the table in diff_regress_test.go.
func goCase(name string, c diffCase) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{\n\tname: %q,\n\tlowers: []layer{\n", name)
	for _, l := range c.lowers {
		fmt.Fprintf(&b, "\t\t%s,\n", goLayer(l, "\t\t"))
	}
	b.WriteString("\t},\n")
	if len(c.upper) > 0 {
		fmt.Fprintf(&b, "\tupper: %s,\n", goLayer(c.upper, "\t"))
	}
	if c.metacopy {
		// runCases compares the uppers without acceptRedirectDirForms, so a case with a
		// mkdir, or a rename or link of a metacopy file, needs its upper check relaxed
		// by hand (see TestDifferentialMetacopy).
		b.WriteString("\topts: metacopyOpts,\n")
	}
	// runDiff observes the tree before the first operation; so does the case.
	b.WriteString("\top: ops(func(r *rec) {\n\t\tr.observe()\n")
	for _, op := range c.ops {
		fmt.Fprintf(&b, "\t\tr.diffStep(%s)\n", goOp(op))
	}
	b.WriteString("\t}),\n},\n")
	return b.String()
}

func goLayer(l layer, indent string) string {
	paths := make([]string, 0, len(l))
	for p := range l {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	parts := make([]string, len(paths))
	for i, p := range paths {
		parts[i] = fmt.Sprintf("%q: %s", p, goEntry(l[p]))
	}
	one := "{" + strings.Join(parts, ", ") + "}"
	if len(one) < 100 {
		return one
	}
	return "{\n" + indent + "\t" + strings.Join(parts, ",\n"+indent+"\t") + ",\n" + indent + "}"
}

func goEntry(e entry) string {
	var s string
	def := uint32(0o644)
	switch e.kind {
	case kindFile:
		switch {
		case e.extents != nil:
			offs := make([]int64, 0, len(e.extents))
			for o := range e.extents {
				offs = append(offs, o)
			}
			sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
			var ext []string
			for _, o := range offs {
				ext = append(ext, fmt.Sprintf("%d: %q", o, e.extents[o]))
			}
			s = fmt.Sprintf("sparse(%d, map[int64]string{%s})", e.size, strings.Join(ext, ", "))
		case len(e.content) > 64 && e.content == patterned(len(e.content)):
			s = fmt.Sprintf("file(patterned(%d))", len(e.content))
		default:
			s = fmt.Sprintf("file(%q)", e.content)
		}
	case kindDir:
		s, def = "dir()", 0o755
	case kindSymlink:
		s, def = fmt.Sprintf("symlink(%q)", e.target), e.perm
	case kindHardlink:
		return fmt.Sprintf("hardlink(%q)", e.target)
	case kindFifo:
		s = "fifo()"
	case kindWhiteout:
		return "whiteout()"
	case kindWhiteoutFile:
		return "whiteoutFile()"
	case kindWhiteoutXattr:
		return "whiteoutXattr()"
	default:
		return fmt.Sprintf("entry{kind: %d}", e.kind)
	}
	if e.perm != def {
		s += fmt.Sprintf(".mode(0o%o)", e.perm)
	}
	if e.uid != 0 || e.gid != 0 {
		s += fmt.Sprintf(".owner(%d, %d)", e.uid, e.gid)
	}
	names := make([]string, 0, len(e.xattrs))
	for k := range e.xattrs {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		s += fmt.Sprintf(".xattr(%q, %q)", k, e.xattrs[k])
	}
	if e.opaque {
		s += ".opaqueDir()"
	}
	if e.opaqueFile {
		s += ".opaqueByFile()"
	}
	if e.opaqueAttr != "" {
		s += fmt.Sprintf(".opaqueByXattr(%q)", e.opaqueAttr)
	}
	return s
}

type flagName = struct {
	v    int
	name string
}

var (
	renameFlagNames    = []flagName{{unix.RENAME_NOREPLACE, "unix.RENAME_NOREPLACE"}, {unix.RENAME_EXCHANGE, "unix.RENAME_EXCHANGE"}}
	fallocateFlagNames = []flagName{{unix.FALLOC_FL_KEEP_SIZE, "unix.FALLOC_FL_KEEP_SIZE"},
		{unix.FALLOC_FL_PUNCH_HOLE, "unix.FALLOC_FL_PUNCH_HOLE"}, {unix.FALLOC_FL_ZERO_RANGE, "unix.FALLOC_FL_ZERO_RANGE"}}
	xattrFlagNames  = []flagName{{unix.XATTR_CREATE, "unix.XATTR_CREATE"}, {unix.XATTR_REPLACE, "unix.XATTR_REPLACE"}}
	utimesFlagNames = []flagName{{unix.AT_SYMLINK_NOFOLLOW, "unix.AT_SYMLINK_NOFOLLOW"}}
)

// goOp prints op as a dop literal with its non-zero fields.
func goOp(op dop) string {
	f := []string{"kind: " + op.kind.String()}
	add := func(cond bool, format string, v any) {
		if cond {
			f = append(f, fmt.Sprintf(format, v))
		}
	}
	add(op.path != "", "path: %q", op.path)
	add(op.path2 != "", "path2: %q", op.path2)
	if op.flags != 0 {
		names := map[dopKind][]flagName{dCreate: openFlagNames, dOpen: openFlagNames, dRename: renameFlagNames,
			dFallocate: fallocateFlagNames, dSetxattr: xattrFlagNames, dUtimes: utimesFlagNames}[op.kind]
		f = append(f, "flags: "+flagString(op.flags, names))
	}
	add(op.mode != 0, "mode: 0o%o", op.mode)
	add(op.off != 0, "off: %d", op.off)
	add(op.n != 0, "n: %d", op.n)
	add(op.seed != 0, "seed: %d", op.seed)
	add(op.name != "", "name: %q", op.name)
	add(op.uid != 0, "uid: %d", op.uid)
	add(op.gid != 0, "gid: %d", op.gid)
	return "dop{" + strings.Join(f, ", ") + "}"
}
