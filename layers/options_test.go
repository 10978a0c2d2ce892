package layers

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want Options
	}{
		{"a single lowerdir is a read-only mount",
			[]string{"-o", "lowerdir=/l", "/m"},
			Options{Lowers: []string{"/l"}, Mountpoint: "/m", ReadOnly: true}},
		{"lowerdirs are listed topmost first",
			[]string{"-o", "lowerdir=/top:/mid:/bottom,upperdir=/u,workdir=/w", "/m"},
			Options{Lowers: []string{"/top", "/mid", "/bottom"}, Upper: "/u", Work: "/w", Mountpoint: "/m"}},
		{"mount.fuse3 puts the source first and the options last",
			[]string{"overlay", "/m", "-o", "lowerdir=/l,upperdir=/u,workdir=/w,dev,suid"},
			Options{Lowers: []string{"/l"}, Upper: "/u", Work: "/w", Source: "overlay", Mountpoint: "/m"}},
		{"the argv mount(8) gave through mount.fuse3 parses",
			[]string{"overlay", "/tmp/mf/m", "-o", "ro,nosuid,nodev,relatime,noatime,noexec,lowerdir=/tmp/mf/l,upperdir=/u,workdir=/w,allow_other,debug,volatile,fsync=0"},
			Options{Lowers: []string{"/tmp/mf/l"}, Upper: "/u", Work: "/w", Source: "overlay", Mountpoint: "/tmp/mf/m",
				ReadOnly: true, NoSuid: true, NoDev: true, NoExec: true, AllowOther: true, Volatile: true, Debug: true, Foreground: true}},
		{"the argv mount.fuse3 gives when called directly parses",
			[]string{"overlay", "/m", "-o", "lowerdir=/l,upperdir=/u,workdir=/w,rw,nosuid,nodev,exec,suid,dev,atime,relatime,noatime,defaults,allow_other,owner,group"},
			Options{Lowers: []string{"/l"}, Upper: "/u", Work: "/w", Source: "overlay", Mountpoint: "/m", AllowOther: true}},
		{"containers/storage's argv parses",
			[]string{"-o", `lowerdir=/s/l/A:/s/l/B,upperdir=/s/x/diff,workdir=/s/x/work,volatile,context="system_u:object_r:container_file_t:s0:c1,c2"`, "/s/x/merged"},
			Options{Lowers: []string{"/s/l/A", "/s/l/B"}, Upper: "/s/x/diff", Work: "/s/x/work", Mountpoint: "/s/x/merged",
				Volatile: true, Context: "system_u:object_r:container_file_t:s0:c1,c2"}},
		{"several -o flags add up",
			[]string{"-o", "lowerdir=/l", "-o", "upperdir=/u", "/m", "-o", "workdir=/w"},
			Options{Lowers: []string{"/l"}, Upper: "/u", Work: "/w", Mountpoint: "/m"}},
		{"a glued -o works like a separate one",
			[]string{"-olowerdir=/l,nodev", "/m"},
			Options{Lowers: []string{"/l"}, Mountpoint: "/m", ReadOnly: true, NoDev: true}},
		{"a colon escaped with a backslash stays in the path",
			[]string{"-o", `lowerdir=/a\:b:/c`, "/m"},
			Options{Lowers: []string{"/a:b", "/c"}, Mountpoint: "/m", ReadOnly: true}},
		{"a comma escaped with a backslash stays in the path",
			[]string{"-o", `lowerdir=/a\,b,upperdir=/u\,v,workdir=/w`, "/m"},
			Options{Lowers: []string{"/a,b"}, Upper: "/u,v", Work: "/w", Mountpoint: "/m"}},
		{"two backslashes are one backslash in the path",
			[]string{"-o", `lowerdir=/a\\:/b`, "/m"},
			Options{Lowers: []string{`/a\`, "/b"}, Mountpoint: "/m", ReadOnly: true}},
		{"a double-quoted lowerdir keeps its commas and colons",
			[]string{"-o", `lowerdir="/a,b:c":/d`, "/m"},
			Options{Lowers: []string{"/a,b:c", "/d"}, Mountpoint: "/m", ReadOnly: true}},
		{"empty items between commas are ignored",
			[]string{"-o", ",,lowerdir=/l,,,nodev,", "/m"},
			Options{Lowers: []string{"/l"}, Mountpoint: "/m", ReadOnly: true, NoDev: true}},
		{"later options override earlier ones",
			[]string{"-o", "lowerdir=/old,ro,nodev,nosuid,noexec,fsync=0,upperdir=/u,workdir=/w", "-o", "lowerdir=/new,rw,dev,suid,exec,fsync=1", "/m"},
			Options{Lowers: []string{"/new"}, Upper: "/u", Work: "/w", Mountpoint: "/m"}},
		{"fsync=0 is volatile",
			[]string{"-o", "lowerdir=/l,fsync=0", "/m"},
			Options{Lowers: []string{"/l"}, Mountpoint: "/m", ReadOnly: true, Volatile: true}},
		{"metacopy=on turns metadata-only copy-up on",
			[]string{"-o", "lowerdir=/l,upperdir=/u,workdir=/w,metacopy=on", "/m"},
			Options{Lowers: []string{"/l"}, Upper: "/u", Work: "/w", Mountpoint: "/m", Metacopy: true}},
		{"a later metacopy=off wins over metacopy=on",
			[]string{"-o", "metacopy=on,lowerdir=/l", "-o", "metacopy=off", "/m"},
			Options{Lowers: []string{"/l"}, Mountpoint: "/m", ReadOnly: true}},
		{"every option containers/storage passes parses, with empty items between them",
			[]string{"-o", `,,lowerdir=/l1:/l2,,upperdir=/u,workdir=/w,uidmapping=:0:100000:65536:65536:1000:1,gidmapping=0:100000:65536,squash_to_root,squash_to_uid=1,squash_to_gid=2,xattr_permissions=2,volatile,noacl,static_nlink,context="a:b,c",,`, "/m"},
			Options{Lowers: []string{"/l1", "/l2"}, Upper: "/u", Work: "/w", Mountpoint: "/m",
				UIDMap: IDMap{{0, 100000, 65536}, {65536, 1000, 1}}, GIDMap: IDMap{{0, 100000, 65536}},
				SquashToRoot: true, SquashUID: ptr(uint32(1)), SquashGID: ptr(uint32(2)), XattrPermissions: 2,
				Volatile: true, NoACL: true, StaticNlink: true, Context: "a:b,c"}},
		{"selinux_enodata keeps ENODATA for a missing SELinux label",
			[]string{"-o", "lowerdir=/l,selinux_enodata", "/m"},
			Options{Lowers: []string{"/l"}, Mountpoint: "/m", ReadOnly: true, SELinuxENODATA: true}},
		{"xattr_permissions=1 keeps owners in security.* xattrs",
			[]string{"-o", "lowerdir=/l,upperdir=/u,workdir=/w,xattr_permissions=1", "/m"},
			Options{Lowers: []string{"/l"}, Upper: "/u", Work: "/w", Mountpoint: "/m", XattrPermissions: 1}},
		{"-f keeps the daemon in the foreground",
			[]string{"-f", "-o", "lowerdir=/l", "/m"},
			Options{Lowers: []string{"/l"}, Mountpoint: "/m", ReadOnly: true, Foreground: true}},
		{"-d implies -f",
			[]string{"/m", "-d", "-o", "lowerdir=/l"},
			Options{Lowers: []string{"/l"}, Mountpoint: "/m", ReadOnly: true, Debug: true, Foreground: true}},
		{"--debug is -d",
			[]string{"--debug", "-o", "lowerdir=/l", "/m"},
			Options{Lowers: []string{"/l"}, Mountpoint: "/m", ReadOnly: true, Debug: true, Foreground: true}},
		{"-- ends the flags",
			[]string{"-o", "lowerdir=/l", "--", "-m"},
			Options{Lowers: []string{"/l"}, Mountpoint: "-m", ReadOnly: true}},
		{"default_permissions, allow_other and the atime family are accepted",
			[]string{"-o", "lowerdir=/l,default_permissions,allow_other,strictatime,nodiratime,lazytime,defaults,nofail,_netdev,auto,noauto,user,nouser,users", "/m"},
			Options{Lowers: []string{"/l"}, Mountpoint: "/m", ReadOnly: true, AllowOther: true}},
		{"-h asks for help and needs nothing else",
			[]string{"-h"}, Options{Help: true}},
		{"--help asks for help even with other arguments",
			[]string{"-o", "lowerdir=/l", "--help", "/m"}, Options{Lowers: []string{"/l"}, Help: true}},
		{"-V asks for the version",
			[]string{"-V"}, Options{Version: true}},
		{"--version asks for the version",
			[]string{"--version"}, Options{Version: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseArgs(tt.args)
			if err != nil {
				t.Fatalf("ParseArgs(%q): %v", tt.args, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseArgs(%q)\n got %+v\nwant %+v", tt.args, got, tt.want)
			}
		})
	}
}

func TestParseArgsErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"an unknown option is named", []string{"-o", "lowerdir=/l,foo", "/m"}, `unknown option "foo"`},
		{"an unknown option with a value is named by its key", []string{"-o", "lowerdir=/l,foo=bar", "/m"}, `unknown option "foo"`},
		{"no lowerdir is an error", []string{"-o", "upperdir=/u,workdir=/w", "/m"}, "no lowerdir given"},
		{"no options at all is an error", []string{"/m"}, "no lowerdir given"},
		{"upperdir without workdir is an error", []string{"-o", "lowerdir=/l,upperdir=/u", "/m"}, "upperdir given without workdir"},
		{"workdir without upperdir is an error", []string{"-o", "lowerdir=/l,workdir=/w", "/m"}, "workdir given without upperdir"},
		{"no mountpoint is an error", []string{"-o", "lowerdir=/l"}, "no mountpoint given"},
		{"three positionals are too many", []string{"-o", "lowerdir=/l", "a", "b", "c"}, "too many arguments"},
		{"-o at the end needs a value", []string{"/m", "-o"}, "option -o needs a value"},
		{"an unknown flag is named", []string{"-x", "-o", "lowerdir=/l", "/m"}, `unknown flag "-x"`},
		{"a flag option takes no value", []string{"-o", "lowerdir=/l,ro=1", "/m"}, `option "ro" takes no value`},
		{"lowerdir needs a value", []string{"-o", "lowerdir", "/m"}, `option "lowerdir" needs a value`},
		{"an empty lowerdir is an error", []string{"-o", "lowerdir=", "/m"}, "empty path in lowerdir"},
		{"an empty path between colons is an error", []string{"-o", "lowerdir=/a::/b", "/m"}, "empty path in lowerdir"},
		{"an empty upperdir is an error", []string{"-o", "lowerdir=/l,upperdir=,workdir=/w", "/m"}, "empty path in upperdir"},
		{"fsync takes 0 or 1", []string{"-o", "lowerdir=/l,fsync=2", "/m"}, "want 0 or 1"},
		{"metacopy takes on or off", []string{"-o", "lowerdir=/l,metacopy=1", "/m"}, "want on or off"},
		{"metacopy needs a value", []string{"-o", "lowerdir=/l,metacopy", "/m"}, `option "metacopy" needs a value`},
		{"xattr_permissions takes 0, 1 or 2", []string{"-o", "lowerdir=/l,xattr_permissions=3", "/m"}, "want 0, 1 or 2"},
		{"an unterminated quote is an error", []string{"-o", `lowerdir=/l,context="a,b`, "/m"}, "unterminated double quote"},
		{"a backslash at the end is an error", []string{"-o", `lowerdir=/l\`, "/m"}, "backslash at the end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseArgs(tt.args)
			if err == nil {
				t.Fatalf("ParseArgs(%q) = %+v, want an error containing %q", tt.args, got, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseArgs(%q): %v, want an error containing %q", tt.args, err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is more than one line", err)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"a read-only mount of one lower says ro",
			Options{Lowers: []string{"/l"}, ReadOnly: true},
			"lowerdir=/l,ro"},
		{"colons, commas and backslashes in paths are escaped",
			Options{Lowers: []string{"/a:b", `/c,d\e`}, Upper: "/u", Work: "/w"},
			`lowerdir=/a\:b:/c\,d\\e,upperdir=/u,workdir=/w`},
		{"flags and the context follow the paths",
			Options{Lowers: []string{"/l"}, Upper: "/u", Work: "/w", NoDev: true, NoSuid: true, NoExec: true,
				AllowOther: true, Volatile: true, Debug: true, Context: `a:b,"c"`},
			`lowerdir=/l,upperdir=/u,workdir=/w,nodev,nosuid,noexec,allow_other,volatile,debug,context="a:b,\"c\""`},
		{"metacopy is written only when on",
			Options{Lowers: []string{"/l"}, Upper: "/u", Work: "/w", Metacopy: true},
			"lowerdir=/l,upperdir=/u,workdir=/w,metacopy=on"},
		{"mountpoint, source and foreground are not mount options",
			Options{Lowers: []string{"/l"}, Mountpoint: "/m", Source: "s", Foreground: true, ReadOnly: true},
			"lowerdir=/l,ro"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.opts.Format(); got != tt.want {
				t.Errorf("Format() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSplitLowerdir(t *testing.T) {
	got, err := SplitLowerdir(`/a\:1:"/b:2":/c`)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/a:1", "/b:2", "/c"}; !reflect.DeepEqual(got, want) {
		t.Errorf("SplitLowerdir = %q, want %q", got, want)
	}
}

func TestAbsMakesEveryPathAbsolute(t *testing.T) {
	t.Chdir(t.TempDir())
	o, err := Options{Lowers: []string{"l", "/x"}, Upper: "u", Work: "w", Mountpoint: "m"}.Abs()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range append(o.Lowers, o.Upper, o.Work, o.Mountpoint) {
		if !strings.HasPrefix(p, "/") {
			t.Errorf("path %q is not absolute", p)
		}
	}
	if o.Lowers[1] != "/x" {
		t.Errorf("absolute lower changed to %q", o.Lowers[1])
	}
}

func ptr[T any](v T) *T { return &v }
