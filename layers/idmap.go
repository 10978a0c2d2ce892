package layers

import (
	"fmt"
	"strconv"
	"strings"
)

// IDRange maps Size IDs from Disk (as stored in the layers) to View (as the merged view
// shows them): fuse-overlayfs's uidmapping=/gidmapping= triple DISK:VIEW:SIZE, which
// containers/storage writes as containerID:hostID:size.
type IDRange struct{ Disk, View, Size uint32 }

// IDMap is a list of ranges; the empty map is the identity.
type IDMap []IDRange

// Overflow is the ID an unmapped ID shows as (the kernel's overflowuid/overflowgid).
const Overflow = 65534

// ParseIDMap parses colon-separated DISK:VIEW:SIZE triples; empty fields (a leading
// colon, as in ":0:100000:65536") are skipped, as fuse-overlayfs does.
func ParseIDMap(s string) (IDMap, error) {
	var nums []uint32
	for _, f := range strings.Split(s, ":") {
		if f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("id mapping %q: %q is not a number", s, f)
		}
		nums = append(nums, uint32(n))
	}
	if len(nums) == 0 || len(nums)%3 != 0 {
		return nil, fmt.Errorf("id mapping %q: want DISK:VIEW:SIZE triples", s)
	}
	var m IDMap
	for i := 0; i < len(nums); i += 3 {
		r := IDRange{Disk: nums[i], View: nums[i+1], Size: nums[i+2]}
		if r.Size == 0 || uint64(r.Disk)+uint64(r.Size) > 1<<32 || uint64(r.View)+uint64(r.Size) > 1<<32 {
			return nil, fmt.Errorf("id mapping %q: range %d:%d:%d is empty or overflows", s, r.Disk, r.View, r.Size)
		}
		m = append(m, r)
	}
	return m, nil
}

// String is the option value ParseIDMap reads back.
func (m IDMap) String() string {
	parts := make([]string, 0, len(m))
	for _, r := range m {
		parts = append(parts, fmt.Sprintf("%d:%d:%d", r.Disk, r.View, r.Size))
	}
	return strings.Join(parts, ":")
}

// ToView is the ID the merged view shows for a stored id.
func (m IDMap) ToView(id uint32) uint32 {
	if len(m) == 0 {
		return id
	}
	for _, r := range m {
		if id >= r.Disk && id-r.Disk < r.Size {
			return r.View + (id - r.Disk)
		}
	}
	return Overflow
}

// ToDisk is the ID stored for an id of the merged view.
func (m IDMap) ToDisk(id uint32) uint32 {
	if len(m) == 0 {
		return id
	}
	for _, r := range m {
		if id >= r.View && id-r.View < r.Size {
			return r.Disk + (id - r.View)
		}
	}
	return Overflow
}
