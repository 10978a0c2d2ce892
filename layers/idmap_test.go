package layers

import (
	"reflect"
	"testing"
)

func TestParseIDMap(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want IDMap
		bad  bool
	}{
		{name: "one triple maps a range", in: "0:100000:65536", want: IDMap{{0, 100000, 65536}}},
		{name: "a leading colon is skipped, as containers/storage writes it", in: ":0:100000:65536", want: IDMap{{0, 100000, 65536}}},
		{name: "several triples follow each other", in: "0:1000:1:1:100000:65535", want: IDMap{{0, 1000, 1}, {1, 100000, 65535}}},
		{name: "a count that is not a multiple of three is refused", in: "0:1000", bad: true},
		{name: "a word is refused", in: "0:root:1", bad: true},
		{name: "an empty range is refused", in: "0:1000:0", bad: true},
		{name: "a range past 2^32 is refused", in: "4294967295:0:2", bad: true},
		{name: "nothing at all is refused", in: ":", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseIDMap(tt.in)
			if tt.bad {
				if err == nil {
					t.Fatalf("ParseIDMap(%q) = %v, want an error", tt.in, got)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseIDMap(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if back, err := ParseIDMap(got.String()); err != nil || !reflect.DeepEqual(back, got) {
				t.Errorf("round trip of %v: %v, %v", got, back, err)
			}
		})
	}
}

func TestIDMapTranslatesBothWays(t *testing.T) {
	m := IDMap{{0, 1000, 1}, {1, 100000, 65535}}
	tests := []struct {
		name       string
		disk, view uint32
	}{
		{"root on disk shows as the first range's view id", 0, 1000},
		{"an id of the second range keeps its offset", 33, 100032},
		{"the last id of the second range", 65535, 165534},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := m.ToView(tt.disk); got != tt.view {
				t.Errorf("ToView(%d) = %d, want %d", tt.disk, got, tt.view)
			}
			if got := m.ToDisk(tt.view); got != tt.disk {
				t.Errorf("ToDisk(%d) = %d, want %d", tt.view, got, tt.disk)
			}
		})
	}
	if got := m.ToView(70000); got != Overflow {
		t.Errorf("an unmapped stored id shows as %d, want the overflow id %d", got, Overflow)
	}
	if got := m.ToDisk(5); got != Overflow {
		t.Errorf("an unmapped view id is stored as %d, want the overflow id %d", got, Overflow)
	}
	if got := (IDMap{}).ToView(42); got != 42 {
		t.Errorf("the empty map changed 42 into %d", got)
	}
}

func TestOwnershipOptionsParseAndRoundTrip(t *testing.T) {
	o, err := ParseOptions("lowerdir=/l,uidmapping=:0:100000:65536,gidmapping=0:200000:10,squash_to_root,squash_to_uid=7,squash_to_gid=8,static_nlink,noacl")
	if err != nil {
		t.Fatal(err)
	}
	if len(o.UIDMap) != 1 || o.UIDMap[0] != (IDRange{0, 100000, 65536}) || len(o.GIDMap) != 1 ||
		!o.SquashToRoot || o.SquashUID == nil || *o.SquashUID != 7 || o.SquashGID == nil || *o.SquashGID != 8 ||
		!o.StaticNlink || !o.NoACL {
		t.Fatalf("parsed %+v", o)
	}
	back, err := ParseOptions(o.Format())
	if err != nil || !reflect.DeepEqual(back, o) {
		t.Errorf("Format round trip: %+v, %v; want %+v", back, err, o)
	}
	for _, bad := range []string{"lowerdir=/l,uidmapping=1:2", "lowerdir=/l,squash_to_uid=x", "lowerdir=/l,squash_to_root=1"} {
		if _, err := ParseOptions(bad); err == nil {
			t.Errorf("ParseOptions(%q) accepted it", bad)
		}
	}
}
