package layers

import (
	"reflect"
	"strings"
	"testing"
)

// FuzzFormatRoundTrip checks that ParseOptions reads what Format writes, for any
// paths and context, and that ParseArgs does too with a mountpoint behind "--".
func FuzzFormatRoundTrip(f *testing.F) {
	f.Add("/l", "/l2", "/u", "/w", "", "/m", uint8(0))
	f.Add("/a:b", `/c,d\`, "/u v", "/w\nx", "system_u:object_r:t:s0:c1,c2", "-m", uint8(0xff))
	f.Add(`"q"`, `\\:`, `=`, `a"b,c`, `"`, ` `, uint8(0x55))
	f.Fuzz(func(t *testing.T, l1, l2, upper, work, context, mnt string, flags uint8) {
		// Each bit of flags is one option.
		var lowers []string
		for _, l := range []string{l1, l2} {
			if l != "" {
				lowers = append(lowers, l)
			}
		}
		if len(lowers) == 0 {
			t.Skip("a mount needs a lower")
		}
		if upper == "" || work == "" {
			upper, work = "", ""
		}
		want := Options{
			Lowers: lowers, Upper: upper, Work: work, Context: context,
			ReadOnly:   flags&1 != 0 || upper == "",
			NoDev:      flags&2 != 0,
			NoSuid:     flags&4 != 0,
			NoExec:     flags&8 != 0,
			AllowOther: flags&16 != 0,
			Volatile:   flags&32 != 0,
			Debug:      flags&64 != 0,
			Metacopy:   flags&128 != 0,
		}
		s := want.Format()
		got, err := ParseOptions(s)
		if err != nil {
			t.Fatalf("ParseOptions(%q): %v", s, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("ParseOptions(Format()) changed the options\nformat %q\n   got %+v\n  want %+v", s, got, want)
		}
		if mnt == "" {
			return
		}
		want.Mountpoint, want.Foreground = mnt, want.Debug
		args := []string{"-o", s, "--", mnt}
		got, err = ParseArgs(args)
		if err != nil {
			t.Fatalf("ParseArgs(%q): %v", args, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("ParseArgs changed the options\nargs %q\n got %+v\nwant %+v", args, got, want)
		}
	})
}

// FuzzParse checks that no input makes the parsers panic, and that whatever
// ParseOptions accepts survives a Format round trip unchanged.
func FuzzParse(f *testing.F) {
	f.Add(`lowerdir=/a\:b:"/c,d",upperdir=/u,workdir=/w,context="x:y,z",,ro`)
	f.Add("-o\x00lowerdir=/l\x00-f\x00/m")
	f.Add(`lowerdir=\`)
	f.Add(`lowerdir="`)
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = ParseArgs(strings.Split(s, "\x00"))
		o, err := ParseOptions(s)
		if err != nil {
			return
		}
		again, err := ParseOptions(o.Format())
		if err != nil {
			t.Fatalf("ParseOptions(%q) accepted, its Format %q did not parse: %v", s, o.Format(), err)
		}
		if !reflect.DeepEqual(again, o) {
			t.Fatalf("round trip of %q changed the options\n got %+v\nwant %+v", s, again, o)
		}
	})
}
