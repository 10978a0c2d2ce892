package main

import (
	"debug/buildinfo"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestEveryBuildUsesTheTags checks that each place that builds the cowfs binary uses
// the Makefile's GOTAGS (which buildTags repeats): a build without them works but
// starts slower, so nothing else would notice.
func TestEveryBuildUsesTheTags(t *testing.T) {
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mk), "\nGOTAGS = "+buildTags+"\n") {
		t.Fatalf("the Makefile's GOTAGS is not %q (buildTags in main_test.go)", buildTags)
	}
	for _, f := range []string{"../../Makefile", "../../scripts/demo.sh", "../../integration/main_test.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		builds := 0
		for i, line := range strings.Split(string(b), "\n") {
			// A build command names its output (-o) and the package.
			if !strings.Contains(line, "build") || !strings.Contains(line, "cmd/cowfs") || !strings.Contains(line, "-o") ||
				strings.HasPrefix(strings.TrimSpace(line), "#") || strings.HasPrefix(strings.TrimSpace(line), "//") {
				continue
			}
			builds++
			if !strings.Contains(line, buildTags) && !strings.Contains(line, "-tags $(GOTAGS)") {
				t.Errorf("%s:%d builds cowfs without -tags %s: %s", f, i+1, buildTags, strings.TrimSpace(line))
			}
		}
		if builds == 0 {
			t.Errorf("%s: no build of ./cmd/cowfs found (update this test)", f)
		}
	}
}

// TestBinaryStartsLight checks what the tags buy: the binary is static, leaves out
// the packages whose init is slow (blackfriday, md2man), and its package inits allocate
// little (GODEBUG=inittrace=1 counts are deterministic, unlike times). go-digest, the
// project's chosen digest library, compiles its regexps at init (92 KB, 841 allocations,
// about 1 ms on a quiet machine): kept, and budgeted for.
func TestBinaryStartsLight(t *testing.T) {
	bin := buildCowfs(t)
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range info.Deps {
		for _, slow := range []string{"github.com/russross/blackfriday", "github.com/cpuguy83/go-md2man"} {
			if strings.HasPrefix(d.Path, slow) {
				t.Errorf("the binary contains %s", d.Path)
			}
		}
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the binary is dynamically linked (an ELF interpreter): each start loads libc")
		}
	}

	cmd := exec.Command(bin, "--version")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v\n%s", filepath.Base(bin), err, out)
	}
	// "init PKG @0.5 ms, 0.1 ms clock, 48936 bytes, 251 allocs"
	var bytes, allocs int
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 11 || f[0] != "init" {
			continue
		}
		b, err1 := strconv.Atoi(f[7])
		a, err2 := strconv.Atoi(f[9])
		if err1 != nil || err2 != nil {
			t.Fatalf("unexpected inittrace line %q", line)
		}
		bytes += b
		allocs += a
		if b > 64<<10 && f[1] != "github.com/opencontainers/go-digest" {
			t.Errorf("the init of %s allocates %d bytes", f[1], b)
		}
	}
	t.Logf("package inits: %d bytes, %d allocations", bytes, allocs)
	// 112 KB and 586 allocations when written without go-digest, 204 KB and 1,427 with it
	// (537 KB and 3,880 with urfave/cli's docs).
	if bytes == 0 || bytes > 256<<10 || allocs > 1800 {
		t.Errorf("package inits allocate %d bytes in %d allocations; budget 256 KiB, 1800", bytes, allocs)
	}
}
