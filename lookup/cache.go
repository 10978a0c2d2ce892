package lookup

import (
	"strconv"
	"sync"

	"github.com/dgraph-io/ristretto/v2"
	"golang.org/x/sys/unix"
)

// Cache holds resolved names keyed by (directory, generation, name). A directory's
// generation is bumped after every change of a name in it, so an entry of an older
// generation is never asked for again: a late Set can't resurrect a stale answer, and a
// dropped Set only costs another walk. The cache is never the only record of anything.
type Cache struct {
	c *ristretto.Cache[string, cached]
	// mu guards pending.
	mu sync.Mutex
	// pending holds the entries set since the last flush; not yet in c, so not found.
	pending []cached
}

// setBatch is how many entries a flush hands to ristretto together. Each Set sends the
// entry to ristretto's goroutine, and a send that finds it parked wakes it on another
// thread, which the Go scheduler follows with a second thread's wake-up (futexes and
// context switches, tens of µs on this VM); the sends of a batch that follow the
// first find it awake and wake nothing. chmod of 5,000 lower files spread over the
// benchmark tree on a metacopy mount (about 3,700 directories looked up for the first
// time), four alternated rounds: the daemon's context switches 24,150-30,340 (median
// 24,840) against 26,190-37,470 (31,910) with a Set each, its CPU 1.64-2.86 s (1.69)
// against 1.73-3.20 s (2.07).
const setBatch = 32

type cached struct {
	key string // the full key: ristretto keys by hash, and a collision must not answer
	e   Entry
}

// NewCache returns a cache of about maxEntries entries (0: no cache).
func NewCache(maxEntries int64) (*Cache, error) {
	if maxEntries <= 0 {
		return nil, nil
	}
	c, err := ristretto.NewCache(&ristretto.Config[string, cached]{
		NumCounters:        maxEntries * 10,
		MaxCost:            maxEntries,
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, err
	}
	return &Cache{c: c}, nil
}

// Close stops the cache's goroutines.
func (c *Cache) Close() {
	if c != nil {
		c.c.Close()
	}
}

// worthCaching reports whether names of dir go through the cache: only in a directory
// that several layers hold. In a directory of one layer a walk is one fstatat (and an
// xattr read for a directory), cheaper than the cache itself: a Set hands the entry to
// ristretto's goroutine, which wakes a parked thread (a futex and a context switch,
// 10-15 µs on this VM). Caching every name cost 0.6 s of the 9.8 s of daemon CPU of a
// cold `ls -lR` of the benchmark tree, for answers the kernel mostly never asked again
// (it keeps its own lookups for an hour). Measured before sets were batched (setBatch).
func worthCaching(dir Dir) bool { return len(dir.Layers) > 1 }

// fillsCache reports whether a resolved entry is kept: a directory only. The kernel asks
// again for a name it knows when it revalidates one with LOOKUP_EXCL (mkdir -p, tar
// making a file's parents) or forgot it, which is a directory's fate far more than a
// file's; every Set costs a wake-up of ristretto's goroutine, 2.3 context switches on
// this VM. Keeping files and absent names too made chmod of 5,000 lower files (each
// looked up once, never again) 2.4-2.9 s instead of 2.1-2.3 s, 40,000 context switches
// instead of 28,000-30,000; and tar -x of 3,000 new files into lower directories, whose
// absent names the kernel looks up twice (LOOKUP, then LOOKUP_EXCL for the create), was
// no faster for it (1.4-2.0 s against 1.5-1.6 s). Also measured before sets were
// batched; the kernel's second lookup of a directory it holds is answered from the node
// now (fs knownDir).
func fillsCache(e Entry) bool { return e.Mode == unix.S_IFDIR }

func key(dir Dir, name string) string {
	b := make([]byte, 0, 40+len(name))
	b = strconv.AppendUint(b, dir.ID, 36)
	b = append(b, '.')
	b = strconv.AppendUint(b, dir.Gen, 36)
	b = append(b, '/')
	b = append(b, name...)
	return string(b)
}

func (c *Cache) get(dir Dir, name string) (Entry, bool) {
	if c == nil {
		return Entry{}, false
	}
	k := key(dir, name)
	v, ok := c.c.Get(k)
	if !ok || v.key != k {
		return Entry{}, false
	}
	return v.e, true
}

// set keeps e for name in dir, once the batch it joins is full (setBatch). Until then
// get does not find it: the kernel looks a name up again mostly when it still holds
// it, and fs answers that from the name's node without asking the cache.
func (c *Cache) set(dir Dir, name string, e Entry) {
	if c == nil {
		return
	}
	k := key(dir, name)
	c.mu.Lock()
	c.pending = append(c.pending, cached{key: k, e: e})
	if len(c.pending) < setBatch {
		c.mu.Unlock()
		return
	}
	batch := c.pending
	c.pending = make([]cached, 0, setBatch)
	c.mu.Unlock()
	c.hand(batch)
}

// hand gives ristretto the entries of batch, one Set each.
func (c *Cache) hand(batch []cached) {
	for _, v := range batch {
		c.c.Set(v.key, v, 1)
	}
}

// flush hands the pending entries to ristretto and waits until get finds them (tests).
func (c *Cache) flush() {
	c.mu.Lock()
	batch := c.pending
	c.pending = nil
	c.mu.Unlock()
	c.hand(batch)
	c.c.Wait()
}
