package fs

import (
	"slices"
	"sync"
	"testing"
	"time"
)

func TestInternLayers(t *testing.T) {
	o := newTestOverlay(t) // two layers: 0 (upper) and 1
	for _, tc := range []struct {
		name string
		a, b []int
		same bool
	}{
		{"one layer is shared", []int{1}, []int{1}, true},
		{"several layers are shared", []int{0, 1}, []int{0, 1}, true},
		{"a long list is shared", []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 200, 300, 400, 500}, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 200, 300, 400, 500}, true},
		{"other layers are another list", []int{0}, []int{1}, false},
		{"the order counts", []int{0, 1}, []int{1, 0}, false},
		{"a prefix is another list", []int{0, 1}, []int{0, 1, 2}, false},
		{"a layer the stack lacks is a list too", []int{7}, []int{7}, true},
		{"varint bytes are not confused", []int{128}, []int{0, 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := slices.Clone(tc.a), slices.Clone(tc.b)
			pa, pb := o.internLayers(a), o.internLayers(b)
			if !slices.Equal(*pa, tc.a) || !slices.Equal(*pb, tc.b) {
				t.Fatalf("interned %v and %v as %v and %v", tc.a, tc.b, *pa, *pb)
			}
			if (pa == pb) != tc.same {
				t.Fatalf("%v and %v: shared %v, want %v", tc.a, tc.b, pa == pb, tc.same)
			}
			// The caller's slice stays the caller's.
			a[0], b[0] = 99, 99
			if (*pa)[0] != tc.a[0] || (*pb)[0] != tc.b[0] {
				t.Fatalf("changing the interned slices' sources changed the lists: %v %v", *pa, *pb)
			}
		})
	}
}

// TestLockCopySerialisesOneNode checks that lockCopy lets one copy-up of a node run at a
// time, and that another node's does not wait for it.
func TestLockCopySerialisesOneNode(t *testing.T) {
	o := newTestOverlay(t)
	a, b := &node{ofs: o}, &node{ofs: o}
	unlockA := o.lockCopy(a)
	got := make(chan string, 3)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); o.lockCopy(a)(); got <- "a" }()
	go func() { defer wg.Done(); o.lockCopy(b)(); got <- "b" }()
	select {
	case w := <-got:
		if w != "b" {
			t.Fatalf("the second copy-up of a node ran during the first")
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("another node's copy-up waited for this one's")
	}
	select {
	case <-got:
		t.Fatalf("the second copy-up of a node ran during the first")
	case <-time.After(50 * time.Millisecond):
	}
	unlockA()
	wg.Wait()
	if w := <-got; w != "a" {
		t.Fatalf("got %q after the first copy-up ended", w)
	}
	if len(o.copying) != 0 {
		t.Fatalf("%d copy-up locks left after all ended", len(o.copying))
	}
}

// TestDirectoryGenerationsNeverRepeat checks that directories never share a generation
// and a changed directory never gets one back, even when changes race: the lookup cache
// keys by generation alone.
func TestDirectoryGenerationsNeverRepeat(t *testing.T) {
	o := newTestOverlay(t)
	dirs := []*node{o.root, {ofs: o, ds: o.newDirState()}, {ofs: o, ds: o.newDirState()}}
	var mu sync.Mutex
	seen := map[uint64]bool{}
	see := func(g uint64) {
		mu.Lock()
		defer mu.Unlock()
		if g == 0 || seen[g] {
			t.Errorf("generation %d seen before (or zero)", g)
		}
		seen[g] = true
	}
	for _, d := range dirs {
		see(d.gen())
	}
	var wg sync.WaitGroup
	for _, d := range dirs {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 200 {
					before := d.gen()
					d.changed()
					if d.gen() == before {
						t.Errorf("a change left the generation at %d", before)
					}
				}
			}()
		}
	}
	wg.Wait()
	for _, d := range dirs {
		see(d.gen())
	}
	if f := (&node{ofs: o}); f.gen() != 0 {
		t.Errorf("a file has generation %d", f.gen())
	}
}
