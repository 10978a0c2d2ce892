package main

import (
	"errors"

	"github.com/cowfs/cowfs/layers"
	"github.com/urfave/cli/v2"
)

// Flag categories of cowfs mount.
const (
	catLayers  = "Layers"
	catMount   = "Mount flags"
	catProcess = "Process"
)

// mountCommand is `cowfs mount`: the same mount as the fuse-overlayfs form, with
// long flags.
func mountCommand() *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "mount a copy-on-write overlay at MOUNTPOINT",
		ArgsUsage: "MOUNTPOINT",
		UsageText: "cowfs mount --lower L1 --lower L2 --upper U --work W [--ro] [--volatile] [-f] [-d] MOUNTPOINT\n" +
			"   cowfs mount --lower L1:L2 MOUNTPOINT   (read-only: no upper)",
		Description: "Lower layers are given topmost first; --lower may be repeated and may hold\n" +
			"several layers separated by colons (\\: escapes a colon in a path).\n" +
			"Without -f or -d, cowfs returns once the filesystem is mounted and serves it\n" +
			"in the background until it is unmounted (fusermount3 -u MOUNTPOINT).",
		OnUsageError: usageError,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "lower", Category: catLayers, Usage: "read-only layer `DIR`s, topmost first (repeat, or L1:L2)"},
			&cli.StringFlag{Name: "upper", Category: catLayers, Usage: "writable layer `DIR` (none: read-only mount)"},
			&cli.StringFlag{Name: "work", Category: catLayers, Usage: "scratch `DIR` on the same filesystem as --upper"},
			&cli.StringFlag{Name: "source", Category: catLayers, Usage: "`NAME` shown as the mount's source"},

			&cli.BoolFlag{Name: "ro", Category: catMount, Usage: "mount read-only"},
			&cli.BoolFlag{Name: "volatile", Category: catMount, Usage: "skip fsync"},
			&cli.BoolFlag{Name: "allow-other", Category: catMount, Usage: "let other users use the mount"},
			&cli.BoolFlag{Name: "nodev", Category: catMount, Usage: "do not honour device files"},
			&cli.BoolFlag{Name: "nosuid", Category: catMount, Usage: "do not honour set-user-ID and set-group-ID bits"},
			&cli.BoolFlag{Name: "noexec", Category: catMount, Usage: "do not allow running programs"},
			&cli.StringFlag{Name: "context", Category: catMount, Usage: "SELinux `CONTEXT`"},

			&cli.BoolFlag{Name: "foreground", Aliases: []string{"f"}, Category: catProcess, Usage: "stay in the foreground"},
			&cli.BoolFlag{Name: "debug", Aliases: []string{"d"}, Category: catProcess, Usage: "print the FUSE traffic (implies -f)"},
		},
		Action: func(c *cli.Context) error {
			opts, err := mountOptions(c)
			if err != nil {
				return err
			}
			return start(opts)
		},
	}
}

// mountOptions builds the Options of cowfs mount's flags.
func mountOptions(c *cli.Context) (layers.Options, error) {
	if c.NArg() != 1 {
		return layers.Options{}, errors.New("mount needs exactly one MOUNTPOINT argument")
	}
	var lowers []string
	for _, l := range c.StringSlice("lower") {
		split, err := layers.SplitLowerdir(l)
		if err != nil {
			return layers.Options{}, err
		}
		lowers = append(lowers, split...)
	}
	opts := layers.Options{
		Lowers:     lowers,
		Upper:      c.String("upper"),
		Work:       c.String("work"),
		Source:     c.String("source"),
		Mountpoint: c.Args().First(),
		ReadOnly:   c.Bool("ro"),
		AllowOther: c.Bool("allow-other"),
		NoDev:      c.Bool("nodev"),
		NoSuid:     c.Bool("nosuid"),
		NoExec:     c.Bool("noexec"),
		Volatile:   c.Bool("volatile"),
		Context:    c.String("context"),
		Foreground: c.Bool("foreground") || c.Bool("debug"),
		Debug:      c.Bool("debug"),
	}
	if err := opts.Validate(); err != nil {
		return layers.Options{}, err
	}
	return opts, nil
}
