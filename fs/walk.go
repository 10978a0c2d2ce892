package fs

import (
	"context"
	"sync/atomic"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Name-only walks: READDIRPLUS without the files' attributes.
//
// A READDIRPLUS reply carries, for each entry, what a LOOKUP of it would: the daemon
// resolves every name through the layers and stats it, so that `ls -l`, `tar` or `du`
// need no LOOKUP afterwards. A walk that only reads names (`find` without tests on the
// attributes, `ls -R`, a shell glob) never asks for them, and on a cold cache each of
// those stats reads the file's inode from disk: the kernel's overlayfs passes such a
// directory's listing through without looking at the files at all.
//
// An entry may come without them (nodeid 0: the kernel makes no dentry and looks the
// name up if it is ever needed), so the daemon leaves them out for a process that
// walks names only. It cannot know that in advance, so it watches, per process (the
// requesting thread's id that FUSE passes):
//
//   - a process starts as "new" and gets full entries;
//   - a new process that has listed walkListingsBeforeLazy directories without one
//     other request than READDIRPLUS and lookups of directories (a process that stats
//     files from the listing sends none either: it is found out below) turns "lazy":
//     its listings give attributes for directories only (which the walk will enter);
//   - any other request (a lookup or getattr of a non-directory, an open, a getxattr,
//     a readlink...) turns the process "full" for good.
//
// A process that stats files (`du`, `ls -lR` built without SELinux and ACLs) can thus
// be taken for a name-only walk; it then looks up one directory's files one by one,
// turns full on the first, and gets full entries from then on. A process that lists
// one directory (`ls -l dir`) or reads the files it lists (`tar`) is never lazy.
//
// What it gets wrong: the table goes by thread, so in a program where one thread lists
// and others stat what it listed, the lister can stay lazy and every stat costs a
// LOOKUP (a round trip, where a full entry would have cost none). Correctness is never
// at stake: the kernel looks up whatever it has no attributes for.
//
// The table has walkSlots slots indexed by pid; a process whose slot another took
// starts again as new. Nothing here decides what a listing contains, only whether the
// kernel gets the attributes with it.
type walkTable struct {
	// slots hold pid<<32 | state<<16 | listings (atomic, no lock).
	slots [walkSlots]atomic.Uint64
}

const (
	walkSlots = 256
	// walkListingsBeforeLazy is how many directories a new process lists with full
	// entries before it may turn lazy.
	walkListingsBeforeLazy = 4
)

// The states of a process in the walk table.
const (
	walkNew uint16 = iota
	walkLazy
	walkFull
)

func walkSlot(pid uint32, state, listings uint16) uint64 {
	return uint64(pid)<<32 | uint64(state)<<16 | uint64(listings)
}

func (w *walkTable) slot(pid uint32) *atomic.Uint64 {
	return &w.slots[pid%walkSlots]
}

// update replaces pid's slot with next(old) until no other request raced it; next
// returns false to leave the slot as it is.
func (w *walkTable) update(pid uint32, next func(old uint64) (uint64, bool)) {
	if w == nil || pid == 0 {
		return
	}
	s := w.slot(pid)
	for {
		old := s.Load()
		v, ok := next(old)
		if !ok || s.CompareAndSwap(old, v) {
			return
		}
	}
}

// listing records that pid started reading a directory (a READDIRPLUS at offset 0).
func (w *walkTable) listing(pid uint32) {
	w.update(pid, func(old uint64) (uint64, bool) {
		if uint32(old>>32) != pid {
			return walkSlot(pid, walkNew, 1), true // first listing, or the slot was another's
		}
		state, n := uint16(old>>16), uint16(old)+1
		if state != walkNew {
			return 0, false
		}
		if n > walkListingsBeforeLazy {
			state = walkLazy
		}
		return walkSlot(pid, state, n), true
	})
}

// touched records that pid asked for something a name-only walk does not.
func (w *walkTable) touched(pid uint32) {
	w.update(pid, func(old uint64) (uint64, bool) {
		if uint32(old>>32) != pid || uint16(old>>16) == walkFull {
			return 0, false
		}
		return walkSlot(pid, walkFull, 0), true
	})
}

// lazy reports whether pid's listings leave out the attributes of non-directories.
func (w *walkTable) lazy(pid uint32) bool {
	if w == nil || pid == 0 {
		return false
	}
	v := w.slot(pid).Load()
	return uint32(v>>32) == pid && uint16(v>>16) == walkLazy
}

// callerPid is the id of the thread that made the request ctx belongs to (0: none).
func callerPid(ctx context.Context) uint32 {
	if c, ok := ctx.(*fuse.Context); ok {
		return c.Caller.Pid
	}
	return 0
}
