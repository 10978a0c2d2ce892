package fs

import (
	"encoding/binary"
	"sync"
)

// layerLists interns the nodes' layer lists (node.layers). A tree has few distinct ones
// (each layer alone, and the sets its directories and metacopy files span), so a node
// holds a pointer to a shared list instead of a slice header and an array of its own.
// A list is never changed once interned. The table only grows, by at most one list per
// distinct set of layers a lookup or copy-up produced.
type layerLists struct {
	// single[li] is the list of layer li alone; built before the mount, read-only.
	single []*[]int
	// mu guards multi, the lists of several layers keyed by their varint encoding.
	mu    sync.Mutex
	multi map[string]*[]int
}

func newLayerLists(layers int) *layerLists {
	t := &layerLists{single: make([]*[]int, layers), multi: make(map[string]*[]int)}
	for li := range t.single {
		t.single[li] = &[]int{li}
	}
	return t
}

// internLayers is the shared list equal to ls (which the caller may go on using).
func (o *overlayFS) internLayers(ls []int) *[]int {
	t := o.lists
	if len(ls) == 1 && ls[0] >= 0 && ls[0] < len(t.single) {
		return t.single[ls[0]]
	}
	var buf [64]byte
	key := buf[:0]
	for _, li := range ls {
		key = binary.AppendUvarint(key, uint64(li))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.multi[string(key)]; ok {
		return p
	}
	p := new([]int)
	*p = append([]int(nil), ls...)
	t.multi[string(key)] = p
	return p
}
