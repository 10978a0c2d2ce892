package lookup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cowfs/cowfs/layers"
	"golang.org/x/sys/unix"
)

// cacheStack is an upper over one lower holding the file f and the directory d, both
// empty otherwise.
func cacheStack(t *testing.T) (s *layers.Stack, upper string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: whiteouts are char 0/0 devices")
	}
	base := t.TempDir()
	lower := filepath.Join(base, "lower")
	upper = filepath.Join(base, "upper")
	work := filepath.Join(base, "work")
	for _, d := range []string{lower, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(lower, "f"), []byte("lower"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(lower, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := layers.Open(layers.Options{Lowers: []string{lower}, Upper: upper, Work: work})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, upper
}

func newTestCache(t *testing.T) *Cache {
	t.Helper()
	c, err := NewCache(1000)
	if err != nil || c == nil {
		t.Fatalf("NewCache(1000) = %v, %v", c, err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestCacheGenerations(t *testing.T) {
	s, upper := cacheStack(t)
	c := newTestCache(t)
	r := New(s, c)
	wh := filepath.Join(upper, "d")
	dir := func(gen uint64) Dir { return Dir{ID: 1, Gen: gen, Layers: []int{0, 1}} }
	lookupD := func(gen uint64) bool {
		t.Helper()
		_, err := r.Lookup(dir(gen), "d")
		if err != nil && !errors.Is(err, ErrNotExist) {
			t.Fatal(err)
		}
		c.flush()
		return err == nil
	}

	if !lookupD(1) {
		t.Fatal("d not found in generation 1")
	}
	if err := unix.Mknod(wh, unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	// The same generation is answered from the cache: this proves the cache is in use,
	// so the answer below comes from a real miss, not from a cache that stores nothing.
	if !lookupD(1) {
		t.Fatal("generation 1 was not served from the cache (the walk saw the whiteout)")
	}
	if lookupD(2) {
		t.Error("after the generation bump the old positive answer was served")
	}
	if err := os.Remove(wh); err != nil {
		t.Fatal(err)
	}
	if !lookupD(2) {
		t.Error("generation 2's negative answer was kept (only directories are)")
	}
}

// Only directories are kept (fillsCache): a file's or an absent name's answer is walked
// again, even in the same generation.
func TestOnlyDirectoriesFillTheCache(t *testing.T) {
	tests := []struct {
		name   string
		lookup string
		change func(upper string) error
		want   bool // found after the change
	}{
		{"a file is looked up again", "f",
			func(upper string) error { return unix.Mknod(filepath.Join(upper, "f"), unix.S_IFCHR, 0) }, false},
		{"an absent name is looked up again", "g",
			func(upper string) error { return os.WriteFile(filepath.Join(upper, "g"), nil, 0o644) }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, upper := cacheStack(t)
			c := newTestCache(t)
			r := New(s, c)
			dir := Dir{ID: 2, Gen: 1, Layers: []int{0, 1}}
			if _, err := r.Lookup(dir, tc.lookup); err != nil && !errors.Is(err, ErrNotExist) {
				t.Fatal(err)
			}
			c.flush()
			if err := tc.change(upper); err != nil {
				t.Fatal(err)
			}
			_, err := r.Lookup(dir, tc.lookup)
			if err != nil && !errors.Is(err, ErrNotExist) {
				t.Fatal(err)
			}
			if got := err == nil; got != tc.want {
				t.Errorf("found = %v after the change, want %v (a stale cached answer)", got, tc.want)
			}
		})
	}
}

func TestListedLookupsReadButDoNotFillTheCache(t *testing.T) {
	s, upper := cacheStack(t)
	c := newTestCache(t)
	r := New(s, c)
	dir := Dir{ID: 3, Gen: 1, Layers: []int{0, 1}}
	fds := NewDirFds(s, "")
	t.Cleanup(fds.Close)

	if _, err := r.LookupListed(fds, dir, "d", 0); err != nil {
		t.Fatal(err)
	}
	c.flush()
	if got, ok := c.get(dir, "d"); ok {
		t.Fatalf("a listed lookup filled the cache: %+v", got)
	}
	// A LOOKUP fills it; a listed lookup then answers from it: the whiteout made
	// behind the resolver's back is not seen until the generation changes.
	if _, err := r.LookupIn(fds, dir, "d"); err != nil {
		t.Fatal(err)
	}
	c.flush()
	if _, ok := c.get(dir, "d"); !ok {
		t.Fatal("LookupIn did not fill the cache")
	}
	if err := unix.Mknod(filepath.Join(upper, "d"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	if e, err := r.LookupListed(fds, dir, "d", 0); err != nil || !slices.Equal(e.Layers, []int{1}) {
		t.Errorf("listed lookup = %+v, %v; want the cached d of layer 1", e, err)
	}
}

func TestCacheNeverAnswersForAnotherKey(t *testing.T) {
	s, _ := cacheStack(t)
	e := Entry{Layers: []int{1}, Mode: unix.S_IFREG, Ino: 77}
	stored := Dir{ID: 5, Gen: 9, Layers: []int{0, 1}}
	tests := []struct {
		name string
		dir  Dir
		key  string
	}{
		{"another directory", Dir{ID: 6, Gen: 9}, "f"},
		{"another generation", Dir{ID: 5, Gen: 10}, "f"},
		{"an older generation", Dir{ID: 5, Gen: 8}, "f"},
		{"another name", stored, "g"},
		{"a name extending the stored one", stored, "ff"},
		{"ID and generation swapped", Dir{ID: 9, Gen: 5}, "f"},
	}
	c := newTestCache(t)
	c.set(stored, "f", e)
	c.flush()
	if got, ok := c.get(stored, "f"); !ok || got.Ino != 77 {
		t.Fatalf("the stored entry is not served under its own key: %+v, %v", got, ok)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, ok := c.get(tt.dir, tt.key); ok {
				t.Errorf("get(%+v, %q) = %+v, stored under (%+v, f)", tt.dir, tt.key, got, stored)
			}
		})
	}
	t.Run("a value whose full key differs (a hash collision) is a miss", func(t *testing.T) {
		c := newTestCache(t)
		d := Dir{ID: 1, Gen: 1, Layers: []int{0, 1}}
		// What a colliding key would leave in ristretto's slot for d/f.
		c.c.Set(key(d, "f"), cached{key: key(Dir{ID: 2, Gen: 1}, "f"), e: Entry{}}, 1)
		c.flush()
		if _, ok := c.c.Get(key(d, "f")); !ok {
			t.Fatal("ristretto did not keep the planted value")
		}
		if got, ok := c.get(d, "f"); ok {
			t.Errorf("get served the colliding entry %+v", got)
		}
		// And Lookup walks the layers instead of trusting the slot (it says "absent").
		got, err := New(s, c).Lookup(d, "f")
		if err != nil || !slices.Equal(got.Layers, []int{1}) {
			t.Errorf("Lookup = %+v, %v; want f from layer 1", got, err)
		}
	})
}

// key must be injective over (ID, Gen, name) for names a directory can hold.
func FuzzCacheKey(f *testing.F) {
	f.Add(uint64(1), uint64(2), "f", uint64(12), uint64(0), "f")
	f.Add(uint64(1), uint64(11), "x", uint64(11), uint64(1), "x")
	f.Add(uint64(0), uint64(0), "a.b", uint64(0), uint64(0), "a.b")
	f.Fuzz(func(t *testing.T, id1, gen1 uint64, n1 string, id2, gen2 uint64, n2 string) {
		if strings.Contains(n1, "/") || strings.Contains(n2, "/") {
			t.Skip("names never contain a slash")
		}
		same := id1 == id2 && gen1 == gen2 && n1 == n2
		if k1, k2 := key(Dir{ID: id1, Gen: gen1}, n1), key(Dir{ID: id2, Gen: gen2}, n2); (k1 == k2) != same {
			t.Errorf("key(%d,%d,%q) = %q, key(%d,%d,%q) = %q", id1, gen1, n1, k1, id2, gen2, n2, k2)
		}
	})
}

func TestNilCache(t *testing.T) {
	s, upper := cacheStack(t)
	c, err := NewCache(0)
	if err != nil || c != nil {
		t.Fatalf("NewCache(0) = %v, %v; want no cache", c, err)
	}
	c.Close()
	r := New(s, c)
	d := Dir{ID: 1, Gen: 1, Layers: []int{0, 1}}
	if _, err := r.Lookup(d, "f"); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(upper, "f"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	// Without a cache every lookup walks, even in the same generation.
	if e, err := r.Lookup(d, "f"); !errors.Is(err, ErrNotExist) {
		t.Errorf("Lookup after the whiteout = %+v, %v; want ErrNotExist", e, err)
	}
}

// Many goroutines resolving and bumping generations at once (run with -race).
func TestResolverConcurrentUse(t *testing.T) {
	s, upper := cacheStack(t)
	for _, n := range []string{"a", "b", "c"} {
		if err := os.Mkdir(filepath.Join(upper, n), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r := New(s, newTestCache(t))
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				d := Dir{ID: 1, Gen: uint64(i % 7), Layers: []int{0, 1}}
				for _, n := range []string{"a", "b", "c", "f"} {
					if _, err := r.Lookup(d, n); err != nil {
						t.Errorf("Lookup %s: %v", n, err)
						return
					}
				}
				if _, err := r.Lookup(d, "missing"); !errors.Is(err, ErrNotExist) {
					t.Errorf("Lookup missing: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// A set waits in the pending batch (not found) until setBatch entries were set; the set
// that fills the batch hands them all to ristretto.
func TestSetsJoinABatch(t *testing.T) {
	c := newTestCache(t)
	dir := Dir{ID: 7, Gen: 1, Layers: []int{0, 1}}
	e := Entry{Layers: []int{1}, Mode: unix.S_IFDIR, Ino: 5}
	c.set(dir, "first", e)
	c.c.Wait()
	if _, ok := c.get(dir, "first"); ok {
		t.Fatal("an entry was found before its batch was full")
	}
	for i := 1; i < setBatch; i++ {
		c.set(dir, fmt.Sprintf("n%d", i), e)
	}
	c.c.Wait()
	for _, name := range []string{"first", "n1", fmt.Sprintf("n%d", setBatch-1)} {
		if got, ok := c.get(dir, name); !ok || got.Ino != 5 {
			t.Errorf("get(%q) = %+v, %v after a full batch; want the entry", name, got, ok)
		}
	}
}
