package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// commitCommand is `cowfs commit NAME`: the container's writable layer becomes a new
// layer and a new image on top of the container's image.
func commitCommand() *cli.Command {
	return &cli.Command{
		Name:  "commit",
		Usage: "store a container's changes as a new layer and image; prints the layer's digest",
		Description: "The layer is an OCI layer tar (.wh. whiteouts, .wh..wh..opq) with sorted\n" +
			"entries; the digest printed is its sha256, and `cowfs layer export DIGEST`\n" +
			"writes the same bytes back. The container must not be mounted.",
		ArgsUsage: "NAME",
		Flags: []cli.Flag{rootFlag(),
			&cli.StringFlag{Name: "name", Usage: "new image `NAME` (default: the short image ID)"}},
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			s, args, err := storeArgs(c, 1, "NAME")
			if err != nil {
				return err
			}
			img, l, err := s.Commit(args[0], c.String("name"))
			if err != nil {
				return err
			}
			fmt.Fprintln(c.App.Writer, l.Digest)
			fmt.Fprintf(c.App.ErrWriter, "image %s %s\n", img.Name, img.ID)
			return nil
		},
	}
}
