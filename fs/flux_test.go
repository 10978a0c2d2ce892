package fs

import (
	"context"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// TestFluxBookkeeping: a name change stays in progress in its directories until go-fuse
// has moved its nodes (rawFS's endFlux), unless the handler failed or ran outside a
// request; every start is ended exactly once, and each start and end moves the sequence.
func TestFluxBookkeeping(t *testing.T) {
	cases := []struct {
		name       string
		request    bool // the handler runs for a request (a cancel channel)
		failed     bool
		busyAfter  bool // still in progress after the handler returned
		rawFSCalls int  // endFlux calls after the handler
	}{
		{name: "a change that succeeded stays in progress until rawFS ends it", request: true, busyAfter: true, rawFSCalls: 1},
		{name: "a change that failed ends when its handler returns", request: true, failed: true, rawFSCalls: 1},
		{name: "a change outside a request ends when its handler returns", busyAfter: false},
		{name: "rawFS ending a request twice ends its change once", request: true, busyAfter: true, rawFSCalls: 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := &overlayFS{}
			a, b := &node{ofs: o, ds: o.newDirState()}, &node{ofs: o, ds: o.newDirState()}
			ctx := context.Background()
			cancel := make(chan struct{})
			if c.request {
				ctx = &fuse.Context{Cancel: cancel}
			}
			end := o.startFlux(ctx, a, b)
			for _, d := range []*node{a, b} {
				if d.ds.flux.Load()&fluxBusy != 1 {
					t.Fatalf("flux %#x after the start: not in progress", d.ds.flux.Load())
				}
			}
			seq := a.ds.flux.Load()
			end(c.failed)
			if got := a.ds.flux.Load()&fluxBusy != 0; got != c.busyAfter {
				t.Errorf("in progress after the handler: %v, want %v", got, c.busyAfter)
			}
			for i := 0; i < c.rawFSCalls; i++ {
				o.endFlux(cancel)
			}
			for _, d := range []*node{a, b} {
				if v := d.ds.flux.Load(); v&fluxBusy != 0 || v>>8 != 2 {
					t.Errorf("flux %#x at the end: want nothing in progress and sequence 2", v)
				}
			}
			if c.busyAfter && seq == a.ds.flux.Load() {
				t.Error("the end did not move the sequence")
			}
		})
	}
}
