package main

import (
	"os"
	"slices"
	"testing"
)

func TestGlobalRoot(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string
		root string
	}{
		{"a --root before the subcommand moves to the environment", []string{"cowfs", "--root", "/s", "ps", "--size"}, []string{"cowfs", "ps", "--size"}, "/s"},
		{"the --root=DIR form moves too", []string{"cowfs", "--root=/t", "layer", "ls"}, []string{"cowfs", "layer", "ls"}, "/t"},
		{"a --root after the subcommand is left to the subcommand", []string{"cowfs", "ps", "--root", "/u"}, []string{"cowfs", "ps", "--root", "/u"}, ""},
		{"fuse-overlayfs arguments are left alone", []string{"cowfs", "-o", "lowerdir=/l", "/m"}, []string{"cowfs", "-o", "lowerdir=/l", "/m"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("COWFS_ROOT", "")
			got := globalRoot(tt.args)
			if !slices.Equal(got, tt.want) {
				t.Errorf("args = %q, want %q", got, tt.want)
			}
			if r := os.Getenv("COWFS_ROOT"); r != tt.root {
				t.Errorf("COWFS_ROOT = %q, want %q", r, tt.root)
			}
		})
	}
}
