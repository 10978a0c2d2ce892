package fs

import (
	"errors"
	"sync/atomic"
	"testing"
)

// TestBackingLayersTriesEachLayerOnce checks that backingLayers registers one file of
// each layer, answers from what it learnt after that, and logs a refusal once.
func TestBackingLayersTriesEachLayerOnce(t *testing.T) {
	tests := []struct {
		name    string
		refused map[int]bool // layers whose files the fake kernel refuses
		opens   []int        // the layer of each open, in order
		want    []bool       // takes' answer for each
		tries   int          // registrations made
		logs    int          // debug lines
	}{
		{name: "every layer taken: one try a layer", opens: []int{0, 1, 0, 1, 2}, want: []bool{true, true, true, true, true}, tries: 3},
		{name: "a refused layer is tried once and logged once", refused: map[int]bool{1: true},
			opens: []int{1, 1, 0, 1, 2}, want: []bool{false, false, true, false, true}, tries: 3, logs: 1},
		{name: "every layer refused", refused: map[int]bool{0: true, 1: true},
			opens: []int{0, 1, 0, 1}, want: []bool{false, false, false, false}, tries: 2, logs: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tries, logs := 0, 0
			b := &backingLayers{
				try: func(fd int) error {
					tries++
					if tc.refused[fd] { // the fake's fd is the layer's index
						return errors.New("too many levels of symbolic links")
					}
					return nil
				},
				logf:  func(string, ...any) { logs++ },
				state: make([]atomic.Int32, 3),
			}
			for i, li := range tc.opens {
				if got := b.takes(li, li); got != tc.want[i] {
					t.Errorf("open %d (layer %d): takes %v, want %v", i, li, got, tc.want[i])
				}
			}
			if tries != tc.tries || logs != tc.logs {
				t.Errorf("%d registrations and %d debug lines, want %d and %d", tries, logs, tc.tries, tc.logs)
			}
		})
	}
}
