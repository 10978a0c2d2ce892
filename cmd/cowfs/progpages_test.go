package main

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"testing"
)

// seg is a program header for fakeELF.
type seg struct {
	typ, flags   uint32
	vaddr, memsz uint64
}

// fakeELF is the first bytes of a 64-bit little-endian ELF file of type typ with the
// program headers segs.
func fakeELF(typ uint16, segs ...seg) []byte {
	b := make([]byte, 64+56*len(segs))
	copy(b, "\x7fELF")
	b[4], b[5] = 2, 1
	le := binary.LittleEndian
	le.PutUint16(b[16:], typ)
	le.PutUint64(b[32:], 64)
	le.PutUint16(b[54:], 56)
	le.PutUint16(b[56:], uint16(len(segs)))
	for i, s := range segs {
		ph := b[64+56*i:]
		le.PutUint32(ph[0:], s.typ)
		le.PutUint32(ph[4:], s.flags)
		le.PutUint64(ph[16:], s.vaddr)
		le.PutUint64(ph[40:], s.memsz)
	}
	return b
}

func TestReadOnlySegments(t *testing.T) {
	const r, rx, rw = uint32(elf.PF_R), uint32(elf.PF_R | elf.PF_X), uint32(elf.PF_R | elf.PF_W)
	load := uint32(elf.PT_LOAD)
	tests := []struct {
		name    string
		head    []byte
		want    []span
		wantErr string
	}{
		{"the read-only segments are given, rounded inward to whole pages",
			fakeELF(2, seg{load, r, 0x400000, 0x5f0}, seg{load, rx, 0x401000, 0x394231}, seg{load, r, 0x796000, 0x3956b6}),
			[]span{{0x401000, 0x795000}, {0x796000, 0xb2b000}}, ""},
		{"a writable segment is never given",
			fakeELF(2, seg{load, rx, 0x401000, 0x2000}, seg{load, rw, 0x500000, 0x3000}),
			[]span{{0x401000, 0x403000}}, ""},
		{"a page a writable segment shares with a read-only one is left out",
			fakeELF(2, seg{load, r, 0x400000, 0x3000}, seg{load, rw, 0x402800, 0x1000}),
			[]span{{0x400000, 0x402000}}, ""},
		{"segments other than PT_LOAD are not looked at",
			fakeELF(2, seg{uint32(elf.PT_GNU_RELRO), r, 0x600000, 0x4000}, seg{uint32(elf.PT_NOTE), r, 0x700000, 0x4000}),
			nil, ""},
		{"a position-independent program is refused (its addresses are not its headers')",
			fakeELF(3, seg{load, rx, 0x1000, 0x2000}), nil, "not a fixed-address executable"},
		{"a file that is not ELF is refused", []byte("#!/bin/sh\necho hello, this is not an ELF file at all, not even close to one\n"),
			nil, "not a 64-bit little-endian ELF"},
		{"program headers beyond the bytes read are refused",
			fakeELF(2, seg{load, rx, 0x401000, 0x2000})[:100], nil, "out of reach"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readOnlySegments(tc.head)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("readOnlySegments = %v, %v; want an error with %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("readOnlySegments = %#x, want %#x", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("span %d = %#x, want %#x", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// Whatever the bytes, a span given is whole pages of one read-only PT_LOAD segment and
// touches no page of a writable one.
func FuzzReadOnlySegments(f *testing.F) {
	f.Add(fakeELF(2, seg{1, 5, 0x401000, 0x394231}, seg{1, 6, 0x500800, 0x1000}))
	if exe, err := os.ReadFile("/proc/self/exe"); err == nil {
		f.Add(exe[:min(len(exe), 4096)])
	}
	f.Fuzz(func(t *testing.T, head []byte) {
		spans, err := readOnlySegments(head)
		if err != nil {
			return
		}
		f, ferr := elf.NewFile(bytes.NewReader(head))
		for _, s := range spans {
			if s.start%4096 != 0 || s.end%4096 != 0 || s.end <= s.start {
				t.Fatalf("span %#x is not whole pages", s)
			}
			if ferr != nil {
				continue // debug/elf wants more of the file than the headers
			}
			inRO := false
			for _, p := range f.Progs {
				if p.Type != elf.PT_LOAD || p.Memsz == 0 {
					continue
				}
				lo, hi := p.Vaddr&^4095, (p.Vaddr+p.Memsz+4095)&^4095
				if p.Flags&elf.PF_W != 0 && lo < s.end && s.start < hi {
					t.Fatalf("span %#x touches the writable segment %#x-%#x", s, p.Vaddr, p.Vaddr+p.Memsz)
				}
				if p.Flags&elf.PF_W == 0 && p.Vaddr <= s.start && s.end <= p.Vaddr+p.Memsz {
					inRO = true
				}
			}
			if !inRO {
				t.Fatalf("span %#x lies in no read-only segment", s)
			}
		}
	})
}

// rssFile is this process's resident pages of files, in kB.
func rssFile(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "RssFile:" {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// The test binary drops its own read-only pages and goes on running: what it runs
// next comes back from the page cache.
func TestDropProgramPages(t *testing.T) {
	if _, err := programSegments(); err != nil {
		t.Skipf("this test binary is not one dropProgramPages works on: %v", err)
	}
	before := rssFile(t)
	n, err := dropProgramPages()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFile(t)
	if n <= 0 || after >= before {
		t.Errorf("dropProgramPages advised %d bytes; RssFile %d kB before, %d kB after", n, before, after)
	}
	// Still running: code and read-only data come back (the ELF parsing and its
	// constants, strconv's tables).
	if spans, err := programSegments(); err != nil || len(spans) == 0 {
		t.Errorf("after the drop: programSegments = %v, %v", spans, err)
	}
	if got := strconv.Quote("\u00e9\x01"); got != `"é\x01"` {
		t.Errorf("strconv.Quote after the drop = %s", got)
	}
}
