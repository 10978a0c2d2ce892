// Package layers knows the layer directories of a mount: it parses the mount options
// (fuse-overlayfs's syntax), validates the directories, and opens them.
package layers

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

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
	// Metacopy copies only metadata up on chmod, chown, utimes and xattr changes of a
	// lower regular file; the data follows on the first open for write or truncate
	// (option metacopy=on|off, as kernel overlayfs's; off by default).
	Metacopy bool
	// Context is the SELinux context="..." value; accepted and passed on.
	Context string

	// UIDMap and GIDMap translate owners between the layers and the view
	// (uidmapping=, gidmapping=); empty is the identity.
	UIDMap, GIDMap IDMap
	// SquashToRoot shows every object as owned by 0:0 (squash_to_root); SquashUID and
	// SquashGID, when set, show every owner as that ID instead (squash_to_uid=,
	// squash_to_gid=), and win over SquashToRoot.
	SquashToRoot         bool
	SquashUID, SquashGID *uint32
	// StaticNlink shows every directory with nlink 1 (static_nlink).
	StaticNlink bool
	// NoACL turns POSIX ACL support off (noacl).
	NoACL bool
	// SELinuxENODATA answers a getxattr of security.selinux on an object without one
	// with ENODATA, as a disk filesystem does, also where SELinux does not run
	// (selinux_enodata); without it such a kernel gets EOPNOTSUPP (fs/xattr.go).
	SELinuxENODATA bool
	// XattrPermissions keeps owners and modes written through the mount in an xattr
	// instead of chowning and chmodding (xattr_permissions=1: security.*, 2: user.*;
	// 0: off), for daemons that may not chown; see override.go.
	XattrPermissions int

	// Foreground keeps the daemon in the foreground (-f).
	Foreground bool
	// Debug prints the FUSE traffic (-d, or option debug).
	Debug bool

	// Help is set when -h or --help was given: the caller prints the usage and
	// nothing else in Options is meaningful or validated.
	Help bool
	// Version is set when -V or --version was given, like Help.
	Version bool
}

// ParseArgs parses the command line the way fuse-overlayfs (libfuse's
// fuse_parse_cmdline) does. args are the arguments after the program name:
//
//	[-f] [-d] [-o OPTS]... [SOURCE] MOUNTPOINT [-o OPTS]...
//
// -o may be repeated and glued to its value (-oOPTS); flags may come before or
// after the positionals, as mount.fuse3 puts them after (`cowfs SOURCE MNT -o OPTS`).
// "--" ends the flags. Later options override earlier ones. Unless -h or -V was
// given, the result is validated with Validate.
func ParseArgs(args []string) (Options, error) {
	var o Options
	var positional []string
	flagsDone := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		if flagsDone || a == "-" || !strings.HasPrefix(a, "-") {
			positional = append(positional, a)
			continue
		}
		switch {
		case a == "--":
			flagsDone = true
		case a == "-o":
			if i+1 >= len(args) {
				return Options{}, errors.New("option -o needs a value")
			}
			i++
			if err := o.apply(args[i]); err != nil {
				return Options{}, err
			}
		case strings.HasPrefix(a, "-o"):
			if err := o.apply(a[len("-o"):]); err != nil {
				return Options{}, err
			}
		case a == "-f":
			o.Foreground = true
		case a == "-d" || a == "--debug":
			o.Debug = true
		case a == "-h" || a == "--help":
			o.Help = true
		case a == "-V" || a == "--version":
			o.Version = true
		default:
			return Options{}, fmt.Errorf("unknown flag %q", a)
		}
	}
	if o.Help || o.Version {
		return o, nil
	}
	switch len(positional) {
	case 0:
		return Options{}, errors.New("no mountpoint given")
	case 1:
		o.Mountpoint = positional[0]
	case 2:
		o.Source, o.Mountpoint = positional[0], positional[1]
	default:
		return Options{}, fmt.Errorf("too many arguments: %q", positional)
	}
	if o.Debug {
		// libfuse: -d and -o debug imply -f.
		o.Foreground = true
	}
	if err := o.Validate(); err != nil {
		return Options{}, err
	}
	return o, nil
}

// ParseOptions parses one -o option string into the mount-option fields of a fresh
// Options (not Source, Mountpoint or Foreground) and validates it with Validate,
// leaving out the mountpoint check. It is the inverse of Format.
func ParseOptions(s string) (Options, error) {
	var o Options
	if err := o.apply(s); err != nil {
		return Options{}, err
	}
	if err := o.validateLayers(); err != nil {
		return Options{}, err
	}
	return o, nil
}

// Validate checks that the options are complete and consistent, without looking at
// the filesystem (that is Check), and fills in what they imply: no upperdir means
// a read-only mount.
func (o *Options) Validate() error {
	if err := o.validateLayers(); err != nil {
		return err
	}
	if o.Mountpoint == "" {
		return errors.New("no mountpoint given")
	}
	return nil
}

func (o *Options) validateLayers() error {
	if len(o.Lowers) == 0 {
		return errors.New("no lowerdir given")
	}
	for _, l := range o.Lowers {
		if l == "" {
			return errors.New("empty path in lowerdir")
		}
	}
	switch {
	case o.Upper != "" && o.Work == "":
		return errors.New("upperdir given without workdir")
	case o.Upper == "" && o.Work != "":
		return errors.New("workdir given without upperdir")
	case o.Upper == "":
		o.ReadOnly = true
	}
	return nil
}

// Abs returns the options with every path made absolute against the current
// directory, so that they keep their meaning in a daemon that changes directory.
func (o Options) Abs() (Options, error) {
	abs := func(p string) (string, error) {
		if p == "" {
			return "", nil
		}
		a, err := filepath.Abs(p)
		if err != nil {
			return "", fmt.Errorf("path %q: %w", p, err)
		}
		return a, nil
	}
	var err error
	lowers := make([]string, len(o.Lowers))
	for i, l := range o.Lowers {
		if lowers[i], err = abs(l); err != nil {
			return Options{}, err
		}
	}
	o.Lowers = lowers
	if o.Upper, err = abs(o.Upper); err != nil {
		return Options{}, err
	}
	if o.Work, err = abs(o.Work); err != nil {
		return Options{}, err
	}
	if o.Mountpoint, err = abs(o.Mountpoint); err != nil {
		return Options{}, err
	}
	return o, nil
}

// Format turns the mount-option fields back into an -o string that ParseOptions
// reads to the same values: paths are escaped with backslashes (\, \: \\) and the
// context is double-quoted.
func (o Options) Format() string {
	var items []string
	if len(o.Lowers) > 0 {
		escaped := make([]string, len(o.Lowers))
		for i, l := range o.Lowers {
			escaped[i] = escape(l)
		}
		items = append(items, "lowerdir="+strings.Join(escaped, ":"))
	}
	if o.Upper != "" {
		items = append(items, "upperdir="+escape(o.Upper))
	}
	if o.Work != "" {
		items = append(items, "workdir="+escape(o.Work))
	}
	flags := []struct {
		set  bool
		name string
	}{
		{o.ReadOnly, "ro"},
		{o.NoDev, "nodev"},
		{o.NoSuid, "nosuid"},
		{o.NoExec, "noexec"},
		{o.AllowOther, "allow_other"},
		{o.Volatile, "volatile"},
		{o.Metacopy, "metacopy=on"},
		{o.Debug, "debug"},
		{o.SquashToRoot, "squash_to_root"},
		{o.StaticNlink, "static_nlink"},
		{o.NoACL, "noacl"},
		{o.SELinuxENODATA, "selinux_enodata"},
	}
	for _, f := range flags {
		if f.set {
			items = append(items, f.name)
		}
	}
	if o.Context != "" {
		items = append(items, `context="`+escapeQuoted(o.Context)+`"`)
	}
	if len(o.UIDMap) > 0 {
		items = append(items, "uidmapping="+o.UIDMap.String())
	}
	if len(o.GIDMap) > 0 {
		items = append(items, "gidmapping="+o.GIDMap.String())
	}
	if o.SquashUID != nil {
		items = append(items, fmt.Sprintf("squash_to_uid=%d", *o.SquashUID))
	}
	if o.SquashGID != nil {
		items = append(items, fmt.Sprintf("squash_to_gid=%d", *o.SquashGID))
	}
	if o.XattrPermissions != 0 {
		items = append(items, fmt.Sprintf("xattr_permissions=%d", o.XattrPermissions))
	}
	return strings.Join(items, ",")
}
