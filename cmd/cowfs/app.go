package main

import (
	"io"

	"github.com/urfave/cli/v2"
)

// appUsage shows the fuse-overlayfs-compatible form, which does not go through the
// cli app, next to the subcommands that do.
const appUsage = `cowfs [-f] [-d] -o lowerdir=L1:L2[,upperdir=U,workdir=W][,OPTION...] [SOURCE] MOUNTPOINT
cowfs mount --lower L1 --lower L2 --upper U --work W [--ro] [-f] [-d] MOUNTPOINT
cowfs --help | --version`

// appDescription explains the fuse-overlayfs form's flags and options.
const appDescription = `The first form is fuse-overlayfs's: it works as containers/storage's mount_program
and behind mount.fuse3 (mount -t fuse.cowfs overlay MOUNTPOINT -o lowerdir=...).
Without -f or -d, cowfs returns once the filesystem is mounted and serves it in the
background until it is unmounted (fusermount3 -u MOUNTPOINT, or umount MOUNTPOINT).

Flags: -o OPTIONS (may be repeated, or glued: -oOPTIONS), -f (foreground),
-d (debug, implies -f), -h/--help, -V/--version.

Options are comma-separated and later ones win; in paths \: \, and \\ escape a
colon, a comma and a backslash, and "double quotes" keep commas and colons:
  lowerdir=L1:L2        read-only layers, topmost first
  upperdir=U            writable layer (without it the mount is read-only)
  workdir=W             scratch directory on the same filesystem as upperdir
  ro, rw                mount read-only or read-write
  nodev, nosuid, noexec (and dev, suid, exec)
  allow_other           let other users use the mount
  volatile, fsync=0|1   skip fsync (volatile or fsync=0) or not (fsync=1)
  context="..."         SELinux context
  debug                 print the FUSE traffic (implies -f)
  uidmapping=D:V:N[:..] show stored uid D..D+N-1 as V..V+N-1 (gidmapping= likewise;
                        unmapped ids show as 65534)
  squash_to_root        show every owner as 0:0 (squash_to_uid=, squash_to_gid= win)
  static_nlink          show every directory with nlink 1
  noacl                 no POSIX ACL support
  selinux_enodata       a missing security.selinux is ENODATA even without SELinux
default_permissions (always on), defaults and the atime options are accepted and
have no effect.`

// newApp builds the cli app of the subcommands. It never exits the process or
// prints a usage dump on a bad flag: errors come back from Run.
func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:                      "cowfs",
		Usage:                     "a copy-on-write overlay filesystem over FUSE",
		UsageText:                 appUsage,
		Description:               appDescription,
		HideVersion:               true,
		DisableSliceFlagSeparator: true,
		Writer:                    stdout,
		ErrWriter:                 stderr,
		Commands:                  []*cli.Command{mountCommand(), layerCommand(), imageCommand(), containerCommand(), psCommand(), diffCommand(), commitCommand()},
		OnUsageError:              usageError,
		ExitErrHandler:            func(*cli.Context, error) {},
	}
}

// usageError returns a bad flag as a plain error, without a help dump.
func usageError(_ *cli.Context, err error, _ bool) error {
	return err
}
