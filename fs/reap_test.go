package fs

import (
	"fmt"
	"os"
	"reflect"
	"sync"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// newTestReaper returns a reaper of a new work dir, holding every removal until a
// drain or its close if hold.
func newTestReaper(t *testing.T, hold bool) (*reaper, string) {
	t.Helper()
	dir := t.TempDir()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if hold {
		t.Setenv(reapHoldEnv, "1")
	} else {
		t.Setenv(reapHoldEnv, "")
	}
	r := newReaper(fd)
	t.Cleanup(r.close)
	return r, dir
}

// entries lists the names in dir.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func TestReaperTakesWhatFitsAndDrainsOnDemand(t *testing.T) {
	type item struct {
		bytes int64
		isDir bool
		taken bool // add's answer
	}
	tests := []struct {
		name  string
		items []item
	}{
		{name: "a small file waits for the reaper", items: []item{{bytes: 4096, taken: true}}},
		{name: "an empty directory waits for the reaper", items: []item{{bytes: dirBytes, isDir: true, taken: true}}},
		{name: "a file that alone passes the budget is refused", items: []item{{bytes: reapBytes + 4096}}},
		{name: "a file exactly the budget is taken", items: []item{{bytes: reapBytes, taken: true}}},
		{name: "a file that would pass the budget with the waiting ones is refused, a smaller one is not",
			items: []item{{bytes: reapBytes - 8192, taken: true}, {bytes: 12288}, {bytes: 8192, taken: true}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, dir := newTestReaper(t, true)
			var kept []string
			for i, it := range tc.items {
				name := fmt.Sprintf("#%d", i)
				var err error
				if it.isDir {
					err = os.Mkdir(dir+"/"+name, 0o755)
				} else {
					err = os.WriteFile(dir+"/"+name, []byte("x"), 0o644)
				}
				if err != nil {
					t.Fatal(err)
				}
				if got := r.add(name, it.bytes); got != it.taken {
					t.Fatalf("add(%s, %d bytes) = %v, want %v", name, it.bytes, got, it.taken)
				}
				if !it.taken {
					os.Remove(dir + "/" + name)
				} else {
					kept = append(kept, name)
				}
			}
			if got := entries(t, dir); len(got) != len(kept) {
				t.Fatalf("the held work dir holds %q, want %q", got, kept)
			}
			if got := r.drain(); got != (len(kept) > 0) {
				t.Errorf("drain with %d entries queued reports %v", len(kept), got)
			}
			if got := entries(t, dir); len(got) != 0 {
				t.Errorf("after drain the work dir holds %q", got)
			}
			if r.drain() {
				t.Error("drain of an empty queue reports something removed")
			}
			if r.pending != 0 || r.queued != 0 {
				t.Errorf("after drain: %d queued, %d bytes pending", r.queued, r.pending)
			}
		})
	}
}

func TestReaperQueueRefusesWhenFull(t *testing.T) {
	r, _ := newTestReaper(t, true)
	for i := 0; i < reapQueue; i++ {
		if !r.add(fmt.Sprint(i), 0) {
			t.Fatalf("add %d of a queue of %d refused", i, reapQueue)
		}
	}
	if r.add("one more", 0) {
		t.Error("a full queue took one more")
	}
}

// Drains racing with adds and with the reaper's own removals neither hang nor lose
// count; run with -race.
func TestReaperDrainsRacingWithAdds(t *testing.T) {
	for _, hold := range []bool{true, false} {
		t.Run(fmt.Sprintf("hold %v", hold), func(t *testing.T) {
			r, dir := newTestReaper(t, hold)
			var wg sync.WaitGroup
			for g := 0; g < 4; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 200; i++ {
						name := fmt.Sprintf("g%d-%d", g, i)
						if err := os.WriteFile(dir+"/"+name, nil, 0o644); err != nil {
							t.Error(err)
							return
						}
						if !r.add(name, 4096) {
							os.Remove(dir + "/" + name)
						}
						if i%7 == g {
							r.drain()
						}
					}
				}()
			}
			wg.Wait()
			r.drain()
			if got := entries(t, dir); len(got) != 0 {
				t.Errorf("after the last drain the work dir holds %d entries", len(got))
			}
			if r.pending != 0 || r.queued != 0 {
				t.Errorf("after the last drain: %d queued, %d bytes pending", r.queued, r.pending)
			}
		})
	}
}

// noSpaceFS answers ENOSPC to the first call of every request, and counts calls.
type noSpaceFS struct {
	fuse.RawFileSystem
	calls int
}

func (f *noSpaceFS) st() fuse.Status {
	f.calls++
	if f.calls == 1 {
		return fuse.Status(unix.ENOSPC)
	}
	return fuse.OK
}

func (f *noSpaceFS) Mknod(<-chan struct{}, *fuse.MknodIn, string, *fuse.EntryOut) fuse.Status {
	return f.st()
}
func (f *noSpaceFS) Mkdir(<-chan struct{}, *fuse.MkdirIn, string, *fuse.EntryOut) fuse.Status {
	return f.st()
}
func (f *noSpaceFS) Unlink(<-chan struct{}, *fuse.InHeader, string) fuse.Status { return f.st() }
func (f *noSpaceFS) Rmdir(<-chan struct{}, *fuse.InHeader, string) fuse.Status  { return f.st() }
func (f *noSpaceFS) Rename(<-chan struct{}, *fuse.RenameIn, string, string) fuse.Status {
	return f.st()
}
func (f *noSpaceFS) Link(<-chan struct{}, *fuse.LinkIn, string, *fuse.EntryOut) fuse.Status {
	return f.st()
}
func (f *noSpaceFS) Symlink(<-chan struct{}, *fuse.InHeader, string, string, *fuse.EntryOut) fuse.Status {
	return f.st()
}
func (f *noSpaceFS) SetXAttr(<-chan struct{}, *fuse.SetXAttrIn, string, []byte) fuse.Status {
	return f.st()
}
func (f *noSpaceFS) RemoveXAttr(<-chan struct{}, *fuse.InHeader, string) fuse.Status {
	return f.st()
}
func (f *noSpaceFS) Create(<-chan struct{}, *fuse.CreateIn, string, *fuse.CreateOut) fuse.Status {
	return f.st()
}
func (f *noSpaceFS) Tmpfile(<-chan struct{}, *fuse.CreateIn, *fuse.CreateOut) fuse.Status {
	return f.st()
}
func (f *noSpaceFS) CopyFileRange(<-chan struct{}, *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	return 0, f.st()
}
func (f *noSpaceFS) Fallocate(<-chan struct{}, *fuse.FallocateIn) fuse.Status { return f.st() }
func (f *noSpaceFS) Write(<-chan struct{}, *fuse.WriteIn, []byte) (uint32, fuse.Status) {
	return 0, f.st()
}
func (f *noSpaceFS) Writev(<-chan struct{}, *fuse.WriteIn, [][]byte) (uint32, fuse.Status) {
	return 0, f.st()
}
func (f *noSpaceFS) SetAttr(<-chan struct{}, *fuse.SetAttrIn, *fuse.AttrOut) fuse.Status {
	return f.st()
}
func (f *noSpaceFS) Open(<-chan struct{}, *fuse.OpenIn, *fuse.OpenOut) fuse.Status { return f.st() }

// Every request that may take space in the upper is run again after an ENOSPC when the
// reaper held something, and only then.
func TestRawFSRetriesAfterENOSPCOnceTheReaperFreedSpace(t *testing.T) {
	allocating := []string{"Mknod", "Mkdir", "Unlink", "Rmdir", "Rename", "Link", "Symlink",
		"SetXAttr", "RemoveXAttr", "Create", "Tmpfile", "CopyFileRange", "Fallocate",
		"Write", "Writev", "SetAttr", "Open"}
	for _, name := range allocating {
		for _, held := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s with the reaper holding a file: %v", name, held), func(t *testing.T) {
				r, dir := newTestReaper(t, true)
				if held {
					if err := os.WriteFile(dir+"/x", nil, 0o644); err != nil {
						t.Fatal(err)
					}
					r.add("x", 4096)
				}
				f := &noSpaceFS{}
				m := reflect.ValueOf(rawFS{f, &overlayFS{reap: r}}).MethodByName(name)
				args := make([]reflect.Value, m.Type().NumIn())
				for i := range args {
					typ := m.Type().In(i)
					if typ.Kind() == reflect.Pointer {
						args[i] = reflect.New(typ.Elem())
					} else {
						args[i] = reflect.Zero(typ)
					}
				}
				out := m.Call(args)
				st := out[len(out)-1].Interface().(fuse.Status)
				want, wantCalls := fuse.Status(unix.ENOSPC), 1
				if held {
					want, wantCalls = fuse.OK, 2
				}
				if st != want || f.calls != wantCalls {
					t.Errorf("answered %v after %d calls, want %v after %d", st, f.calls, want, wantCalls)
				}
				if got := entries(t, dir); len(got) != 0 {
					t.Errorf("the work dir still holds %q", got)
				}
			})
		}
	}
}
