package store

import (
	"regexp"
	"strings"
	"testing"
)

// TestContainerNameRule checks the written-out rule against Docker's regexp, on
// chosen names and on every name of up to two characters from a small alphabet.
func TestContainerNameRule(t *testing.T) {
	docker := regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)
	names := []string{"", "a", "build", "my_container_1", "A.b-c_d", "_x", ".x", "-x", "x y", "../x", "x/y",
		"é", "x\n", strings.Repeat("a", 128), strings.Repeat("a", 129), "a" + strings.Repeat("-", 127)}
	const alphabet = "aZ09_.-/ \x00\xff"
	for _, a := range alphabet {
		names = append(names, string(a))
		for _, b := range alphabet {
			names = append(names, string(a)+string(b))
		}
	}
	for _, name := range names {
		if got, want := validContainerName(name), docker.MatchString(name); got != want {
			t.Errorf("validContainerName(%q) = %v, Docker's rule says %v", name, got, want)
		}
	}
}
