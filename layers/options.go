// Package layers knows the layer directories of a mount: it parses the mount options
// (fuse-overlayfs's syntax), validates the directories, and opens them.
package layers

// Options is everything a mount needs, parsed from fuse-overlayfs-style arguments
// (`-o lowerdir=L1:L2,upperdir=U,workdir=W [SOURCE] MOUNTPOINT`) or from the
// `cowfs mount` subcommand's flags.
type Options struct {
	// Lowers are the read-only layers, topmost first (as in lowerdir=top:...:bottom).
	Lowers []string
	// Upper is the writable layer; empty for a read-only mount of lowers only.
	Upper string
	// Work is the scratch directory on the same filesystem as Upper.
	Work string
	// Source is the optional SOURCE argument (shown as the mount's source); "cowfs" if empty.
	Source string
	// Mountpoint is where the merged tree is mounted.
	Mountpoint string

	// ReadOnly mounts read-only (option ro, or no upperdir).
	ReadOnly bool
	// AllowOther lets other users use the mount (option allow_other; always on as root).
	AllowOther bool
	// NoDev, NoSuid, NoExec are the kernel mount flags of the same names.
	NoDev, NoSuid, NoExec bool
	// Volatile skips fsync (option volatile, or fsync=0).
	Volatile bool
	// Context is the SELinux context="..." value; accepted and passed on.
	Context string

	// Foreground keeps the daemon in the foreground (-f).
	Foreground bool
	// Debug prints the FUSE traffic (-d, or option debug).
	Debug bool
}
