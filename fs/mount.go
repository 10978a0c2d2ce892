// Package fs is the FUSE node tree of cowfs: the only package that imports go-fuse.
package fs

import (
	"errors"

	"github.com/cowfs/cowfs/layers"
)

// Mounted is a live cowfs mount.
type Mounted struct{}

// Mount validates and opens the layers in opts, mounts the merged tree at
// opts.Mountpoint, and returns once the kernel handshake is done.
func Mount(opts layers.Options) (*Mounted, error) {
	return nil, errors.New("not implemented yet")
}

// Wait blocks until the filesystem is unmounted.
func (m *Mounted) Wait() {}

// Unmount unmounts the filesystem; it gives up waiting after a timeout and detaches lazily.
func (m *Mounted) Unmount() error { return nil }
