package whiteout_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cowfs/cowfs/whiteout"
	"golang.org/x/sys/unix"
)

func TestParseMetacopy(t *testing.T) {
	digest := func(n int) []byte {
		v := make([]byte, n)
		v[1] = byte(n)
		return v
	}
	tests := []struct {
		name string
		v    []byte
		ok   bool
	}{
		{"an empty value (what the kernel writes without verity) is a metacopy", nil, true},
		{"the bare 4-byte struct of version 0 is a metacopy", []byte{0, 4, 0, 0}, true},
		{"a struct with a sha256 digest is a metacopy", digest(4 + 32), true},
		{"a struct with the largest digest is a metacopy", digest(4 + 64), true},
		{"three bytes are too short", []byte{0, 3, 0}, false},
		{"a value longer than the struct is refused", digest(4 + 65), false},
		{"version 1 is refused", []byte{1, 4, 0, 0}, false},
		{"a len field that is not the value's length is refused", []byte{0, 8, 0, 0}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := whiteout.ParseMetacopy(tt.v)
			if (err == nil) != tt.ok {
				t.Fatalf("ParseMetacopy(%x) = %v, want ok=%v", tt.v, err, tt.ok)
			}
			if err != nil && !errors.Is(err, unix.EIO) {
				t.Errorf("ParseMetacopy(%x) = %v, want an EIO error like the kernel's", tt.v, err)
			}
		})
	}
}

func TestIsMetacopyReadsOneNamespace(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"plain", "user", "bad"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	set := func(name, attr string, v []byte) {
		if err := unix.Lsetxattr(filepath.Join(dir, name), attr, v, 0); err != nil {
			t.Skipf("user xattrs not supported here: %v", err)
		}
	}
	set("user", "user.overlay.metacopy", nil)
	set("bad", "user.overlay.metacopy", []byte{9})
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for _, c := range []struct {
		name, prefix string
		want, err    bool
	}{
		{"plain", "user.", false, false},
		{"user", "user.", true, false},
		{"user", "trusted.", false, false},
		{"bad", "user.", false, true},
	} {
		got, err := whiteout.IsMetacopy(fd, c.name, c.prefix)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("IsMetacopy(%s, %s) = %v, %v; want %v, error %v", c.name, c.prefix, got, err, c.want, c.err)
		}
	}
}
