package integration

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// xattrNames records listxattr of path (every name, markers included).
func (r *rec) xattrNames(path string) {
	names, err := listxattr(r.p(path))
	if err != nil {
		r.errno("listxattr "+path, err)
		return
	}
	r.val("listxattr "+path, names)
}

func (r *rec) getxattr(path, name string) {
	v, err := getxattr(r.p(path), name)
	if err != nil {
		r.errno("getxattr "+path+" "+name, err)
		return
	}
	r.val("getxattr "+path+" "+name, v)
}

func TestWhiteout(t *testing.T) {
	runCases(t, []behaviourCase{
		{
			name:   "unlinking a lower file leaves a whiteout and does not copy it up",
			lowers: []layer{{"d/f": file("lower"), "d/g": file("g")}},
			op: ops(func(r *rec) {
				r.errno("unlink d/f", unix.Unlink(r.p("d/f")))
				r.stat("d/f")
				r.ls("d")
			}),
			want:       []string{"unlink d/f: ok", "lstat d/f: ENOENT", "readdir d: [g]"},
			checkUpper: allOf(upperIs("d/f", "whiteout"), upperIs("d/g", "absent")),
		},
		{
			name:       "unlinking a file that is only in the upper layer leaves no whiteout",
			lowers:     []layer{{"other": file("o")}},
			upper:      layer{"f": file("upper")},
			op:         ops(func(r *rec) { r.errno("unlink f", unix.Unlink(r.p("f"))); r.ls(".") }),
			checkUpper: upperIs("f", "absent"),
		},
		{
			name:       "unlinking a copied-up file replaces it with a whiteout",
			lowers:     []layer{{"f": file("lower")}},
			upper:      layer{"f": file("upper")},
			op:         ops(func(r *rec) { r.errno("unlink f", unix.Unlink(r.p("f"))); r.stat("f") }),
			want:       []string{"lstat f: ENOENT"},
			checkUpper: upperIs("f", "whiteout"),
		},
		{
			name:   "rmdir of an empty lower directory leaves a whiteout",
			lowers: []layer{{"d/e": dir()}},
			op: ops(func(r *rec) {
				r.errno("rmdir d/e", unix.Rmdir(r.p("d/e")))
				r.stat("d/e")
				r.ls("d")
			}),
			checkUpper: upperIs("d/e", "whiteout"),
		},
		{
			name:   "rmdir of a lower directory whose entries were all unlinked succeeds",
			lowers: []layer{{"d/a": file("a"), "d/b": file("b")}, {"d/c": file("c")}},
			op: ops(func(r *rec) {
				r.errno("rmdir d (full)", unix.Rmdir(r.p("d")))
				for _, n := range []string{"d/a", "d/b", "d/c"} {
					r.errno("unlink "+n, unix.Unlink(r.p(n)))
				}
				r.ls("d")
				r.errno("rmdir d (all whited out)", unix.Rmdir(r.p("d")))
				r.stat("d")
			}),
			want:       []string{"rmdir d (full): ENOTEMPTY", "rmdir d (all whited out): ok"},
			checkUpper: upperIs("d", "whiteout"),
		},
		{
			name:   "rmdir of a merged directory with a lower entry left fails with ENOTEMPTY",
			lowers: []layer{{"d/a": file("a"), "d/b": file("b")}},
			upper:  layer{"d/u": file("u")},
			op: ops(func(r *rec) {
				r.errno("unlink d/a", unix.Unlink(r.p("d/a")))
				r.errno("unlink d/u", unix.Unlink(r.p("d/u")))
				r.errno("rmdir d", unix.Rmdir(r.p("d")))
				r.ls("d")
			}),
			want: []string{"rmdir d: ENOTEMPTY", "readdir d: [b]"},
		},
		{
			name:   "removing a lower directory and creating one of the same name makes it opaque",
			lowers: []layer{{"d/old": file("old")}},
			op: ops(func(r *rec) {
				r.errno("unlink d/old", unix.Unlink(r.p("d/old")))
				r.errno("rmdir d", unix.Rmdir(r.p("d")))
				r.errno("mkdir d", unix.Mkdir(r.p("d"), 0o700))
				r.stat("d")
				r.ls("d")
				r.stat("d/old")
			}),
			want:       []string{"readdir d: []", "lstat d/old: ENOENT"},
			checkUpper: upperIs("d", "opaque"),
		},
		{
			name:   "creating a file where a lower file was unlinked replaces the whiteout",
			lowers: []layer{{"f": file("lower").mode(0o600)}},
			op: ops(func(r *rec) {
				r.errno("unlink f", unix.Unlink(r.p("f")))
				r.errno("create f", os.WriteFile(r.p("f"), []byte("new"), 0o644))
				r.stat("f")
				r.read("f")
			}),
			want:       []string{`read f: "new"`},
			checkUpper: upperIs("f", "file"),
		},
		{
			name:   "creating a directory where a lower file was unlinked",
			lowers: []layer{{"x": file("lower")}},
			op: ops(func(r *rec) {
				r.errno("unlink x", unix.Unlink(r.p("x")))
				r.errno("mkdir x", unix.Mkdir(r.p("x"), 0o755))
				r.stat("x")
				r.ls("x")
			}),
		},
		{
			name: "internal markers never appear in readdir, listxattr or getxattr",
			lowers: []layer{
				{"d": dir().opaqueDir(), "d/a": file("a"), "e": dir().opaqueByFile(), "e/b": file("b"), "w/gone": whiteout(), "w/gone2": whiteoutFile(), "w/keep": file("k")},
				{"d/hidden": file("h"), "w/gone": file("g"), "w/gone2": file("g2")},
			},
			upper: layer{"u": dir().opaqueDir(), "u/c": file("c"), "w/gone3": whiteout()},
			op: ops(func(r *rec) {
				for _, d := range []string{"d", "e", "w", "u"} {
					r.ls(d)
					r.xattrNames(d)
					r.getxattr(d, opaqueXattr)
					r.getxattr(d, userOpaqueXattr)
				}
				r.stat("w/gone3")
				r.stat("e/" + opaqueFileName)
				r.stat("w/.wh.gone2")
			}),
			want: []string{"readdir w: [keep]", "readdir e: [b]", "readdir d: [a]"},
		},
		{
			name:   "a directory made opaque by mkdir hides its markers from the caller",
			lowers: []layer{{"d/x": file("x")}},
			op: ops(func(r *rec) {
				r.errno("unlink d/x", unix.Unlink(r.p("d/x")))
				r.errno("rmdir d", unix.Rmdir(r.p("d")))
				r.errno("mkdir d", unix.Mkdir(r.p("d"), 0o755))
				r.xattrNames("d")
				r.getxattr("d", opaqueXattr)
				r.errno("setxattr trusted.overlay.opaque", unix.Setxattr(r.p("d"), opaqueXattr, []byte("n"), 0))
			}),
		},
	})
}
