package fs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Every request with a reply goes through schedFS.tick: a method of the bridge that
// schedFS does not override would let a workload made of that request alone keep its
// P's tick still (see sched.go).
func TestSchedFSWrapsEveryRequestWithAReply(t *testing.T) {
	notRequests := map[string]string{
		"String": "not a request", "SetDebug": "not a request", "Init": "not a request",
		"OnUnmount": "not a request",
		"Forget":    "no reply, comes in bursts",
		// Answered ENOSYS once, after which the kernel never sends them (rawfs.go).
		"OpenDir": "answered ENOSYS once", "ReleaseDir": "never sent after OpenDir's ENOSYS",
		"Flush": "answered ENOSYS once",
		// Rare: one a file lock, an ioctl, a seek, a copy or an allocation.
		"GetLk": "rare", "SetLk": "rare", "SetLkw": "rare", "Ioctl": "rare", "Lseek": "rare",
		"CopyFileRange": "rare", "Fallocate": "rare", "FsyncDir": "rare", "Tmpfile": "rare",
	}
	own := schedFSMethods(t)
	raw := reflect.TypeOf((*fuse.RawFileSystem)(nil)).Elem()
	for i := 0; i < raw.NumMethod(); i++ {
		name := raw.Method(i).Name
		if _, skip := notRequests[name]; !skip && !own[name] {
			t.Errorf("schedFS does not override %s, a request with a reply", name)
		}
	}
	for name := range notRequests {
		if _, ok := raw.MethodByName(name); !ok {
			t.Errorf("%s is listed as left out but is no longer a RawFileSystem method", name)
		}
	}
}

func TestSchedFSTicksAtMostOnceAMillisecond(t *testing.T) {
	s := newSchedFS(nil, nil)
	s.tick()
	first := s.last.Load()
	if first == 0 {
		t.Fatal("the first request did not yield")
	}
	for i := 0; i < 100; i++ {
		s.tick()
	}
	if got := s.last.Load(); got != first && time.Duration(got-first) < time.Millisecond {
		t.Errorf("yielded again %v after the first", time.Duration(got-first))
	}
	time.Sleep(2 * time.Millisecond)
	s.tick()
	if s.last.Load() == first {
		t.Error("no yield 2 ms after the last one")
	}
}

func TestRaiseProcsLeavesAnIdlePForEveryReader(t *testing.T) {
	tests := []struct {
		name string
		env  string
		cpus int
		want int
	}{
		{name: "one CPU gets three readers' worth plus its own", cpus: 1, want: 1 + 3},
		{name: "two CPUs get three readers' worth plus their own", cpus: 2, want: 2 + 3},
		{name: "eight CPUs get nine readers' worth plus their own", cpus: 8, want: 8 + 9},
		{name: "sixty-four CPUs get go-fuse's seventeen readers at most", cpus: 64, want: 64 + 17},
		{name: "a GOMAXPROCS from the environment is kept", env: "3", cpus: 3, want: 3},
	}
	orig := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(orig) })
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOMAXPROCS", tc.env)
			runtime.GOMAXPROCS(tc.cpus)
			raiseProcs()
			if got := runtime.GOMAXPROCS(0); got != tc.want {
				t.Errorf("GOMAXPROCS = %d, want %d", got, tc.want)
			}
		})
	}
}

// schedFSMethods lists the methods sched.go declares on schedFS (reflection cannot tell
// them from the ones promoted from the embedded bridge).
func schedFSMethods(t *testing.T) map[string]bool {
	f, err := parser.ParseFile(token.NewFileSet(), "sched.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	own := map[string]bool{}
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Recv == nil || len(fd.Recv.List) != 1 {
			continue
		}
		if id, ok := fd.Recv.List[0].Type.(*ast.Ident); ok && id.Name == "schedFS" {
			own[fd.Name.Name] = true
		}
	}
	return own
}
