package fs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"runtime"
	"slices"
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

func TestSchedFSYieldPeriods(t *testing.T) {
	const t0 = int64(1e18) // an arbitrary clock reading
	ms := int64(time.Millisecond)
	tests := []struct {
		name string
		// arrivals of the requests after the first, which yields, in ns after it
		arrivals []int64
		// the requests that yield, as indexes into arrivals
		want []int
	}{
		{
			name:     "requests in a row yield once a millisecond",
			arrivals: seq(50_000, 50_000, 100),
			want:     []int{19, 39, 59, 79, 99},
		},
		{
			name:     "requests a millisecond apart yield once every 5 ms",
			arrivals: seq(ms, ms, 12),
			want:     []int{4, 9},
		},
		{
			name:     "a request just under the gap after the previous one is in a row",
			arrivals: []int64{ms - int64(spacedGap) + 1, ms},
			want:     []int{1},
		},
		{
			name:     "a request the gap after the previous one is spaced",
			arrivals: []int64{ms - int64(spacedGap), ms},
			want:     nil,
		},
		{
			name:     "a spaced request after a millisecond in a row does not yield",
			arrivals: []int64{100_000, 200_000, 300_000, 400_000, 500_000, 600_000, 700_000, 800_000, 900_000, 2 * ms},
			want:     nil,
		},
		{
			name:     "a request in a row after a spaced one yields on the busy period",
			arrivals: []int64{2 * ms, 2*ms + 100_000},
			want:     []int{1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSchedFS(nil, nil)
			if !s.mustYield(t0) {
				t.Fatal("the first request did not yield")
			}
			var got []int
			for i, at := range tt.arrivals {
				if s.mustYield(t0 + at) {
					got = append(got, i)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("yielding requests %v, want %v", got, tt.want)
			}
		})
	}
}

// seq returns n times from first, step apart.
func seq(first, step int64, n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = first + int64(i)*step
	}
	return out
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
