package sysx

import "testing"

func TestUnescapeMountinfoUndoesTheKernelsEscapes(t *testing.T) {
	if got, want := UnescapeMountinfo(`/a\040b\011c\012d\134e\`), "/a b\tc\nd\\e\\"; got != want {
		t.Errorf("UnescapeMountinfo = %q, want %q", got, want)
	}
	if got := UnescapeMountinfo("/plain"); got != "/plain" {
		t.Errorf("UnescapeMountinfo(/plain) = %q", got)
	}
}
