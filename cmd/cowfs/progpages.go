package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// The program's code and read-only data are all mapped at start (earlyfork.c maps them
// in one madvise, to spare a mount the page faults), and each later fault maps 16
// pages around the one asked for. So after a walk of the benchmark tree the daemon had
// 7.3 MiB of the binary in its resident set (RssFile) against fuse-overlayfs's 1.2 MiB,
// most of it code that only the start ran. A while after the mount (long enough for a
// mount, `ls` and umount to be over) the daemon lets go of those pages: the ones it
// still runs come back at their next use, from the page cache (a minor fault each),
// and after the same walk it has 5.0-5.2 MiB (README, "Start-up and memory").
// Only the program's read-only segments: dropping a written page of its data (or a
// relocated one) would lose the write.

// programPagesKeptFor is how long after the mount the program's pages stay mapped.
const programPagesKeptFor = 2 * time.Second

// dropProgramPages unmaps the pages of the program's read-only segments (the PT_LOAD
// segments without write permission, read from /proc/self/exe) with MADV_DONTNEED, and
// returns how many bytes of address space it advised. Only for a program loaded where
// its headers say (ET_EXEC, as cowfs is built: static, not position-independent);
// other programs are left alone.
func dropProgramPages() (int64, error) {
	spans, err := programSegments()
	if err != nil {
		return 0, err
	}
	var total int64
	for _, s := range spans {
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, uintptr(s.start), uintptr(s.end-s.start), unix.MADV_DONTNEED); e != 0 {
			return total, fmt.Errorf("madvise %#x-%#x: %w", s.start, s.end, e)
		}
		total += int64(s.end - s.start)
	}
	return total, nil
}

// programSegments is readOnlySegments of the running program.
func programSegments() ([]span, error) {
	exe, err := os.Open("/proc/self/exe")
	if err != nil {
		return nil, err
	}
	defer exe.Close()
	head := make([]byte, 64<<10)
	n, err := io.ReadFull(exe, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, err
	}
	return readOnlySegments(head[:n])
}

// span is a page-aligned range of addresses, [start, end).
type span struct{ start, end uint64 }

// readOnlySegments returns the page-aligned address ranges of the loadable segments
// without write permission of the ELF program whose first bytes are head (an x86-64
// or other 64-bit little-endian executable of type ET_EXEC), or an error saying why
// not. A page a writable segment shares with a read-only one is left out: a relocated
// or written page must never be dropped.
func readOnlySegments(head []byte) ([]span, error) {
	const (
		ehdrSize = 64
		etExec   = 2
		ptLoad   = 1
		pfW      = 2
		page     = 4096
	)
	if len(head) < ehdrSize || string(head[:4]) != "\x7fELF" || head[4] != 2 || head[5] != 1 {
		return nil, errors.New("not a 64-bit little-endian ELF file")
	}
	le := binary.LittleEndian
	if t := le.Uint16(head[16:]); t != etExec {
		return nil, fmt.Errorf("ELF type %d, not a fixed-address executable", t)
	}
	phoff, phentsize, phnum := le.Uint64(head[32:]), uint64(le.Uint16(head[54:])), uint64(le.Uint16(head[56:]))
	if phentsize < 56 || phoff > uint64(len(head)) || phnum > (uint64(len(head))-phoff)/phentsize {
		return nil, errors.New("ELF program headers out of reach")
	}
	var ro, rw []span
	for i := uint64(0); i < phnum; i++ {
		ph := head[phoff+i*phentsize:]
		if le.Uint32(ph[0:]) != ptLoad {
			continue
		}
		vaddr, memsz := le.Uint64(ph[16:]), le.Uint64(ph[40:])
		if memsz == 0 || vaddr+memsz < vaddr {
			continue
		}
		if le.Uint32(ph[4:])&pfW != 0 {
			rw = append(rw, span{vaddr &^ (page - 1), (vaddr + memsz + page - 1) &^ (page - 1)})
		} else {
			// Whole pages inside the segment only.
			ro = append(ro, span{(vaddr + page - 1) &^ (page - 1), (vaddr + memsz) &^ (page - 1)})
		}
	}
	var out []span
	for _, s := range ro {
		for _, w := range rw {
			if w.start < s.end && s.start < w.end { // overlap: keep the part before it
				s.end = min(s.end, w.start)
			}
		}
		if s.end > s.start {
			out = append(out, s)
		}
	}
	return out, nil
}
