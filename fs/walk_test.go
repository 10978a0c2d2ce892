package fs

import "testing"

// The walk table's states (walk.go), request by request.
func TestWalkTable(t *testing.T) {
	const pid, other = 1000, 1000 + walkSlots // other takes pid's slot
	type step struct {
		listing, touched uint32 // a READDIRPLUS at offset 0 / another request, by this pid
		lazy             bool   // pid is lazy after the step
	}
	lists := func(n int, lazyFrom int) []step {
		var s []step
		for i := 1; i <= n; i++ {
			s = append(s, step{listing: pid, lazy: lazyFrom > 0 && i >= lazyFrom})
		}
		return s
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "a process that lists directories and asks nothing else turns lazy after the first few",
			steps: lists(walkListingsBeforeLazy+2, walkListingsBeforeLazy+1)},
		{name: "a process that asks for anything else while new is never lazy",
			steps: append([]step{{listing: pid}, {touched: pid}}, lists(walkListingsBeforeLazy+2, 0)...)},
		{name: "a lazy process that asks for anything else turns full for good",
			steps: append(lists(walkListingsBeforeLazy+1, walkListingsBeforeLazy+1),
				append([]step{{touched: pid}}, lists(walkListingsBeforeLazy+2, 0)...)...)},
		{name: "a process whose slot another took starts again as new",
			steps: append(lists(walkListingsBeforeLazy+1, walkListingsBeforeLazy+1),
				append([]step{{listing: other}}, lists(walkListingsBeforeLazy+1, walkListingsBeforeLazy+1)...)...)},
		{name: "another process's requests do not change this one",
			steps: append(lists(walkListingsBeforeLazy+1, walkListingsBeforeLazy+1),
				step{touched: pid + 1, lazy: true}, step{touched: other, lazy: true})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var w walkTable
			for i, s := range tc.steps {
				if s.listing != 0 {
					w.listing(s.listing)
				}
				if s.touched != 0 {
					w.touched(s.touched)
				}
				if got := w.lazy(pid); got != s.lazy {
					t.Fatalf("after step %d (%+v): lazy = %v, want %v", i+1, s, got, s.lazy)
				}
			}
		})
	}
	t.Run("the kernel's own requests (pid 0) and a mount without a table are never lazy", func(t *testing.T) {
		var w walkTable
		var none *walkTable
		for i := 0; i < 2*walkListingsBeforeLazy; i++ {
			w.listing(0)
			none.listing(pid)
		}
		if w.lazy(0) || none.lazy(pid) {
			t.Error("lazy")
		}
	})
}
