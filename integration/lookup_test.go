package integration

import (
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// lookupTree records the whole merged view under "." as a result, so that a
// lookup case states its expectation as the tree it should see.
func lookupTree(paths ...string) opFunc {
	return ops(func(r *rec) {
		for _, p := range paths {
			if st := r.stat(p); st.Mode&unix.S_IFMT == unix.S_IFDIR {
				r.ls(p)
			} else {
				r.read(p)
			}
		}
	})
}

func TestLookup(t *testing.T) {
	runCases(t, []behaviourCase{
		{
			name: "a name resolves in the topmost layer that has it",
			lowers: []layer{
				{"a": file("top"), "b": file("middle-b")},
				{"a": file("middle"), "c": file("bottom-c")},
				{"a": file("bottom"), "b": file("bottom-b")},
			},
			op:   lookupTree("a", "b", "c"),
			want: []string{`read a: "top"`, `read b: "middle-b"`, `read c: "bottom-c"`},
		},
		{
			name:   "the upper layer wins over every lower",
			lowers: []layer{{"a": file("lower")}},
			upper:  layer{"a": file("upper").mode(0o600)},
			op:     lookupTree("a"),
			want:   []string{`read a: "upper"`},
		},
		{
			name: "the first non-directory wins over a directory below it",
			lowers: []layer{
				{"x": file("file on top")},
				{"x/inside": file("hidden")},
			},
			op:   lookupTree("x", "x/inside"),
			want: []string{`read x: "file on top"`, "lstat x/inside: ENOTDIR"},
		},
		{
			name: "a directory on top of a file hides the file and does not merge",
			lowers: []layer{
				{"x/top": file("t")},
				{"x": file("bottom file")},
			},
			op:   lookupTree("x", "x/top"),
			want: []string{"readdir x: [top]", `read x/top: "t"`},
		},
		{
			name: "directories merge across all layers",
			lowers: []layer{
				{"d/a": file("1"), "d/sub/x": file("x1")},
				{"d/b": file("2"), "d/sub/y": file("y2")},
				{"d/c": file("3"), "d/a": file("shadowed")},
			},
			upper: layer{"d/u": file("u")},
			op: ops(func(r *rec) {
				r.ls("d")
				r.ls("d/sub")
				r.read("d/a")
			}),
			want: []string{"readdir d: [a b c sub u]", "readdir d/sub: [x y]", `read d/a: "1"`},
		},
		{
			name: "a char 0/0 whiteout hides a file in every layer below",
			lowers: []layer{
				{"d/gone": whiteout(), "d/keep": file("k")},
				{"d/gone": file("middle")},
				{"d/gone": file("bottom")},
			},
			op:   lookupTree("d/gone", "d"),
			want: []string{"lstat d/gone: ENOENT", "readdir d: [keep]"},
		},
		{
			name: "a .wh. whiteout file hides a file below and does not show itself",
			lowers: []layer{
				{"d/gone": whiteoutFile(), "d/keep": file("k")},
				{"d/gone": file("bottom")},
			},
			op:   lookupTree("d/gone", "d/.wh.gone", "d"),
			want: []string{"lstat d/gone: ENOENT", "lstat d/.wh.gone: ENOENT", "readdir d: [keep]"},
		},
		{
			name:   "a whiteout in the upper layer hides a lower directory",
			lowers: []layer{{"d/sub/f": file("f")}},
			upper:  layer{"d/sub": whiteout()},
			op:     lookupTree("d/sub", "d/sub/f", "d"),
			want:   []string{"lstat d/sub: ENOENT", "readdir d: []"},
		},
		{
			name: "a whiteout hides only the layers below it, not a file above",
			lowers: []layer{
				{"a": file("above")},
				{"a": whiteout()},
				{"a": file("below")},
			},
			op:   lookupTree("a"),
			want: []string{`read a: "above"`},
		},
		{
			name: "an opaque directory by xattr stops the merge below it",
			lowers: []layer{
				{"d": dir().opaqueDir(), "d/top": file("t")},
				{"d/below": file("b")},
			},
			op:   lookupTree("d", "d/below"),
			want: []string{"lstat d/below: ENOENT"},
		},
		{
			name: "an opaque directory by .wh..wh..opq stops the merge and hides the marker",
			lowers: []layer{
				{"d": dir().opaqueByFile(), "d/top": file("t")},
				{"d/below": file("b")},
			},
			op:   lookupTree("d", "d/below", "d/.wh..wh..opq"),
			want: []string{"lstat d/below: ENOENT", "lstat d/.wh..wh..opq: ENOENT"},
		},
		{
			name:   "an opaque upper directory hides every lower entry",
			lowers: []layer{{"d/a": file("a"), "d/b/c": file("c")}},
			upper:  layer{"d": dir().opaqueDir(), "d/new": file("n")},
			op:     lookupTree("d", "d/a"),
			want:   []string{"lstat d/a: ENOENT"},
		},
		{
			name: "an opaque directory merges with the layers above it",
			lowers: []layer{
				{"d/a": file("top")},
				{"d": dir().opaqueDir(), "d/b": file("mid")},
				{"d/c": file("hidden")},
			},
			op:   ops(func(r *rec) { r.ls("d") }),
			want: []string{"readdir d: [a b]"},
		},
		{
			name: "a symlink to / in a lower layer is not followed when another layer has a directory of that name",
			lowers: []layer{
				{"etc": symlink("/")},
				{"etc/passwd": file("layer passwd")},
			},
			op: ops(func(r *rec) {
				r.stat("etc")
				r.stat("etc/passwd")
				r.read("etc/passwd")
			}),
			// The caller's VFS follows etc to the host's /, where there is
			// no /passwd; the layer's etc/passwd must not show through.
			want: []string{`lstat etc: symlink 0777 0:0 nlink=1 -> "/"`, "lstat etc/passwd: ENOENT"},
		},
		{
			name: "a symlinked directory below a real directory does not merge",
			lowers: []layer{
				{"d/top": file("t")},
				{"d": symlink("/proc")},
			},
			op:   ops(func(r *rec) { r.ls("d"); r.stat("d/self") }),
			want: []string{"readdir d: [top]", "lstat d/self: ENOENT"},
		},
		{
			name: "symlinks inside layers resolve through the merged view",
			lowers: []layer{
				{"link": symlink("d/target"), "abs": symlink("/nonexistent-cowfs-target")},
				{"d/target": file("reached")},
			},
			op: ops(func(r *rec) {
				r.read("link")
				r.stat("abs")
				r.read("abs")
			}),
			want: []string{`read link: "reached"`, "read abs: ENOENT"},
		},
		{
			// fs's node.rel joins the names of the path into one string, keeping up to
			// 16 of them on the stack; deeper paths take another way.
			name:   "a file 20 directories down is read, changed and copied up",
			lowers: []layer{{strings.Repeat("d/", 19) + "dir-twenty/f": file("deep")}},
			op: ops(func(r *rec) {
				p := strings.Repeat("d/", 19) + "dir-twenty/f"
				r.read(p)
				r.errno("chmod", unix.Chmod(r.p(p), 0o600))
				r.val("mode", fmt.Sprintf("%o", r.stat(p).Mode))
				r.read(p)
			}),
			want:       []string{`read d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/dir-twenty/f: "deep"`, "mode: 100600"},
			checkUpper: upperIs(strings.Repeat("d/", 19)+"dir-twenty/f", "file"),
		},
		{
			// The kernel looks a directory it holds up again for mkdir (LOOKUP_EXCL);
			// cowfs answers that from the directory's node (fs knownDir), whose layers
			// must be the ones after the copy-ups, or the reply's attributes would put
			// the lower copy's mode back.
			name: "a directory looked up again after its copy-up shows the upper copy",
			lowers: []layer{
				{"a/b/f": file("f")},
				{"a/b/g": file("g"), "a/c": dir()},
			},
			op: ops(func(r *rec) {
				r.stat("a/b")
				r.errno("chmod a/b", unix.Chmod(r.p("a/b"), 0o700))
				r.errno("chmod a/b/f", unix.Chmod(r.p("a/b/f"), 0o600))
				r.errno("mkdir a", unix.Mkdir(r.p("a"), 0o755))
				r.errno("mkdir a/b", unix.Mkdir(r.p("a/b"), 0o755))
				r.errno("mkdir a/c", unix.Mkdir(r.p("a/c"), 0o755))
				r.val("mode a/b", fmt.Sprintf("%o", r.stat("a/b").Mode))
				r.errno("mkdir a/b/new", unix.Mkdir(r.p("a/b/new"), 0o755))
				r.ls("a/b")
			}),
			want: []string{"mkdir a: EEXIST", "mkdir a/b: EEXIST", "mkdir a/c: EEXIST", "mode a/b: 40700"},
		},
		{
			name: "every entry type in a lower layer shows through unchanged",
			lowers: []layer{{
				"f":    file("data").mode(0o4755).owner(1000, 1001).xattr("user.k", "v"),
				"cap":  file("bin").mode(0o755).xattr("security.capability", capability()),
				"d":    dir().mode(0o1777).owner(2, 3).xattr("user.dir", "x"),
				"s":    symlink("f"),
				"h":    hardlink("f"),
				"p":    fifo(),
				"sock": socket(),
				"null": chardev(1, 3),
				"sp":   sparse(4<<20, map[int64]string{0: "head", 3 << 20: "tail"}),
			}},
			op: lookupTree(),
		},
	})
}
