package whiteout_test

import (
	"strings"
	"testing"

	"github.com/cowfs/cowfs/whiteout"
)

// markers are real marker names of every tool whose layers cowfs reads: a user's
// attribute must never be stored under one of them.
var markers = []string{
	"trusted.overlay.opaque",
	"trusted.overlay.whiteout",
	"trusted.overlay.origin",
	"trusted.overlay.redirect",
	"trusted.overlay.metacopy",
	"trusted.overlay.impure",
	"user.overlay.opaque",
	"user.overlay.whiteout",
	"user.overlay.origin",
	"user.fuseoverlayfs.opaque",
	"user.fuseoverlayfs.origin",
	"trusted.cowfs.origin",
	"user.cowfs.origin",
}

// checkStoredXattr holds the escaping properties for one user attribute name.
func checkStoredXattr(t *testing.T, attr string) {
	t.Helper()
	stored := whiteout.StoredXattr(attr)
	back, visible := whiteout.UserXattr(stored)
	if !visible || back != attr {
		t.Errorf("UserXattr(StoredXattr(%q) = %q) = (%q, %v), want (%q, true)", attr, stored, back, visible, attr)
	}
	for _, m := range markers {
		if stored == m {
			t.Errorf("StoredXattr(%q) = %q, a real marker", attr, stored)
		}
	}
	inMarkerNamespace := false
	for _, p := range []string{"trusted.overlay.", "user.overlay.", "user.fuseoverlayfs.", "trusted.cowfs.", "user.cowfs."} {
		if strings.HasPrefix(attr, p) {
			inMarkerNamespace = true
			if want := p + "overlay." + attr[len(p):]; stored != want {
				t.Errorf("StoredXattr(%q) = %q, want %q (one level of escaping, as the kernel nests)", attr, stored, want)
			}
		}
	}
	if !inMarkerNamespace && stored != attr {
		t.Errorf("StoredXattr(%q) = %q, want it unchanged outside the marker namespaces", attr, stored)
	}
}

func FuzzStoredXattrRoundTrip(f *testing.F) {
	for _, s := range append([]string{
		"", "user.foo", "security.capability", "system.posix_acl_access",
		"trusted.overlay.", "trusted.overlay.overlay.opaque", "trusted.overlay", "user.overlay",
		"user.fuseoverlayfs.", "trusted.cowfs.origin.x", "user.cowfs.", "trusted.overlayopaque",
		"user.overlay.overlay.overlay.x", "trusted.Overlay.opaque",
	}, markers...) {
		f.Add(s)
	}
	f.Fuzz(checkStoredXattr)
}

func TestUserXattr(t *testing.T) {
	tests := []struct {
		name     string
		stored   string
		wantName string
		visible  bool
	}{
		{"an ordinary user attribute shows as itself", "user.mime_type", "user.mime_type", true},
		{"a capability shows as itself", "security.capability", "security.capability", true},
		{"the kernel's opaque marker is hidden", "trusted.overlay.opaque", "", false},
		{"the unprivileged opaque marker is hidden", "user.overlay.opaque", "", false},
		{"the xattr whiteout marker is hidden", "trusted.overlay.whiteout", "", false},
		{"fuse-overlayfs's opaque marker is hidden", "user.fuseoverlayfs.opaque", "", false},
		{"cowfs's origin is hidden", "trusted.cowfs.origin", "", false},
		{"cowfs's unprivileged origin is hidden", "user.cowfs.origin", "", false},
		{"an escaped opaque attribute shows unescaped one level", "trusted.overlay.overlay.opaque", "trusted.overlay.opaque", true},
		{"a doubly escaped attribute loses one level", "user.overlay.overlay.overlay.x", "user.overlay.overlay.x", true},
		{"an escaped cowfs attribute shows unescaped", "trusted.cowfs.overlay.origin", "trusted.cowfs.origin", true},
		{"a name merely starting like the namespace is not in it", "trusted.overlayfoo", "trusted.overlayfoo", true},
		{"the bare namespace prefix is a marker name", "trusted.overlay.", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := whiteout.UserXattr(tt.stored)
			if got != tt.wantName || ok != tt.visible {
				t.Errorf("UserXattr(%q) = (%q, %v), want (%q, %v)", tt.stored, got, ok, tt.wantName, tt.visible)
			}
		})
	}
}

func TestTarget(t *testing.T) {
	tests := []struct {
		name   string
		entry  string
		target string
		ok     bool
	}{
		{"a whiteout file hides the name after the prefix", ".wh.foo", "foo", true},
		{"a whiteout of a dotfile keeps the dot", ".wh..bashrc", ".bashrc", true},
		{"the opaque marker hides no name", ".wh..wh..opq", "", false},
		{"the bare prefix hides no name", ".wh.", "", false},
		{"an ordinary name is not a whiteout", "foo", "", false},
		{"the prefix must be at the start", "foo.wh.bar", "", false},
		{"a near miss of the prefix is not a whiteout", ".whfoo", "", false},
		{"a name without the last dot is not a whiteout", ".wh", "", false},
		{"a whiteout of a whiteout-like name strips one prefix", ".wh..wh.foo", ".wh.foo", true},
		{"the empty name is not a whiteout", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := whiteout.Target(tt.entry)
			if got != tt.target || ok != tt.ok {
				t.Errorf("Target(%q) = (%q, %v), want (%q, %v)", tt.entry, got, ok, tt.target, tt.ok)
			}
		})
	}
}

func TestIsInternalName(t *testing.T) {
	tests := []struct {
		name     string
		entry    string
		internal bool
	}{
		{"a whiteout file is internal", ".wh.foo", true},
		{"the opaque marker is internal", ".wh..wh..opq", true},
		{"the bare prefix is internal", ".wh.", true},
		{"an ordinary name is not", "foo", false},
		{"a dotfile is not", ".bashrc", false},
		{"a near miss of the prefix is not", ".whfoo", false},
		{"the prefix in the middle is not", "a.wh.b", false},
		{"the empty name is not", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := whiteout.IsInternalName(tt.entry); got != tt.internal {
				t.Errorf("IsInternalName(%q) = %v, want %v", tt.entry, got, tt.internal)
			}
		})
	}
}

// Every name Target accepts is internal: a whiteout can never be a visible name.
func FuzzTargetIsInternal(f *testing.F) {
	for _, s := range []string{".wh.a", ".wh..wh..opq", "a", ".wh.", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		target, ok := whiteout.Target(name)
		if !ok {
			return
		}
		if !whiteout.IsInternalName(name) {
			t.Errorf("Target(%q) = %q but the name is not internal", name, target)
		}
		if whiteout.Prefix+target != name {
			t.Errorf("Target(%q) = %q, which does not rebuild the name", name, target)
		}
		if target == "" {
			t.Errorf("Target(%q) hides the empty name", name)
		}
	})
}
