package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// diffCommand is `cowfs diff NAME`: the container's changes, like `podman diff`.
func diffCommand() *cli.Command {
	return &cli.Command{
		Name:  "diff",
		Usage: "list the paths a container added (A), changed (C) and deleted (D)",
		Description: "Read from the container's writable layer: a whiteout is D; an entry that the\n" +
			"image also has is C, any other A; an opaque (replaced) directory lists the\n" +
			"image's entries it hides as D and its own as A.",
		ArgsUsage:    "NAME",
		Flags:        []cli.Flag{rootFlag()},
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			s, args, err := storeArgs(c, 1, "NAME")
			if err != nil {
				return err
			}
			changes, err := s.Diff(args[0])
			if err != nil {
				return err
			}
			for _, ch := range changes {
				fmt.Fprintln(c.App.Writer, ch)
			}
			return nil
		},
	}
}
