package main

import (
	"fmt"

	"github.com/cowfs/cowfs/layers"
	"github.com/urfave/cli/v2"
)

// containerCommand is `cowfs container`: create, mount and remove containers (an image
// plus a writable layer).
func containerCommand() *cli.Command {
	return &cli.Command{
		Name:  "container",
		Usage: "manage containers (an image plus a writable layer)",
		Subcommands: []*cli.Command{
			{
				Name:      "create",
				Usage:     "make a container of IMAGE with an empty writable layer; prints its name",
				ArgsUsage: "IMAGE",
				Flags: []cli.Flag{rootFlag(),
					&cli.StringFlag{Name: "name", Usage: "container `NAME` (default: the short ID)"}},
				OnUsageError: usageError,
				Action: func(c *cli.Context) error {
					s, args, err := storeArgs(c, 1, "IMAGE")
					if err != nil {
						return err
					}
					ct, err := s.CreateContainer(args[0], c.String("name"))
					if err == nil {
						fmt.Fprintln(c.App.Writer, ct.Name)
					}
					return err
				},
			},
			{
				Name:  "mount",
				Usage: "mount a container's filesystem at MOUNTPOINT (image layers as lowers, its own upper)",
				Description: "Runs the cowfs daemon as `cowfs mount` does: returns once mounted, unless -f.\n" +
					"Unmount with fusermount3 -u MOUNTPOINT (or umount).",
				ArgsUsage: "NAME MOUNTPOINT",
				Flags: []cli.Flag{rootFlag(),
					&cli.BoolFlag{Name: "foreground", Aliases: []string{"f"}, Usage: "stay in the foreground"},
					&cli.BoolFlag{Name: "debug", Aliases: []string{"d"}, Usage: "print the FUSE traffic (implies -f)"},
					&cli.BoolFlag{Name: "volatile", Usage: "skip fsync"}},
				OnUsageError: usageError,
				Action: func(c *cli.Context) error {
					s, args, err := storeArgs(c, 2, "NAME MOUNTPOINT")
					if err != nil {
						return err
					}
					spec, err := s.ContainerMount(args[0])
					if err != nil {
						return err
					}
					opts := layers.Options{
						Lowers:     spec.Lowers,
						Upper:      spec.Upper,
						Work:       spec.Work,
						Source:     spec.Source,
						Mountpoint: args[1],
						Volatile:   c.Bool("volatile"),
						Foreground: c.Bool("foreground") || c.Bool("debug"),
						Debug:      c.Bool("debug"),
					}
					if err := opts.Validate(); err != nil {
						return err
					}
					return start(opts)
				},
			},
			{
				Name:         "rm",
				Usage:        "remove a container and its writable layer (refused while mounted)",
				ArgsUsage:    "NAME",
				Flags:        []cli.Flag{rootFlag()},
				OnUsageError: usageError,
				Action: func(c *cli.Context) error {
					s, args, err := storeArgs(c, 1, "NAME")
					if err != nil {
						return err
					}
					return s.RemoveContainer(args[0])
				},
			},
		},
	}
}
