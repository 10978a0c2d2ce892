package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/cowfs/cowfs/layers/store"
	"github.com/urfave/cli/v2"
)

// imageCommand is `cowfs image`: import OCI layouts, make images of stored layers,
// list and remove images.
func imageCommand() *cli.Command {
	return &cli.Command{
		Name:  "image",
		Usage: "manage images (named stacks of layers)",
		Subcommands: []*cli.Command{
			{
				Name:      "import",
				Usage:     "import an OCI image layout (a directory or a tar of one), verifying every blob",
				ArgsUsage: "OCI_LAYOUT_DIR|OCI_ARCHIVE",
				Flags: []cli.Flag{rootFlag(),
					&cli.StringFlag{Name: "name", Usage: "image `NAME` (default: the index's ref.name annotation, else the short ID)"}},
				OnUsageError: usageError,
				Action: func(c *cli.Context) error {
					s, args, err := storeArgs(c, 1, "OCI_LAYOUT_DIR|OCI_ARCHIVE")
					if err != nil {
						return err
					}
					var dones []func()
					imgs, err := s.ImportOCI(args[0], store.OCIOptions{Name: c.String("name"),
						Progress: func(r io.Reader, size int64, label string) io.Reader {
							r, done := progress(r, size, label)
							dones = append(dones, done)
							return r
						}})
					for _, d := range dones {
						d()
					}
					for _, img := range imgs {
						fmt.Fprintf(c.App.Writer, "%s %s\n", img.Name, img.ID)
					}
					return err
				},
			},
			{
				Name:         "create",
				Usage:        "make an image of stored layers, given bottom first",
				ArgsUsage:    "NAME LAYER...",
				Flags:        []cli.Flag{rootFlag()},
				OnUsageError: usageError,
				Action: func(c *cli.Context) error {
					args, err := needArgs(c, -1, "NAME LAYER...")
					if err != nil {
						return err
					}
					s, err := openStore(c)
					if err != nil {
						return err
					}
					img, err := s.CreateImage(args[0], args[1:])
					if err == nil {
						fmt.Fprintf(c.App.Writer, "%s %s\n", img.Name, img.ID)
					}
					return err
				},
			},
			{
				Name:  "ls",
				Usage: "list images with their layers (short digests; --json for full ones), size, shared size and unique size",
				Flags: []cli.Flag{rootFlag(),
					&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
				OnUsageError: usageError,
				Action:       imageList,
			},
			{
				Name:         "rm",
				Usage:        "remove an image no container uses (its layers stay)",
				ArgsUsage:    "NAME",
				Flags:        []cli.Flag{rootFlag()},
				OnUsageError: usageError,
				Action: func(c *cli.Context) error {
					s, args, err := storeArgs(c, 1, "NAME")
					if err != nil {
						return err
					}
					return s.RemoveImage(args[0])
				},
			},
		},
	}
}

// imageList is `cowfs image ls`.
func imageList(c *cli.Context) error {
	s, err := openStore(c)
	if err != nil {
		return err
	}
	us, err := s.ImageUsages()
	if err != nil {
		return err
	}
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(us)
	}
	w := tabwriter.NewWriter(c.App.Writer, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "NAME / LAYERS (top first)\tID\tSIZE\tSHARED SIZE\tUNIQUE SIZE")
	for _, u := range us {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", u.Name, u.ID.Encoded()[:12], formatSize(u.Size), formatSize(u.SharedSize), formatSize(u.UniqueSize))
		for i := len(u.LayerSizes) - 1; i >= 0; i-- {
			l := u.LayerSizes[i]
			shared := ""
			if l.Shared {
				shared = " (shared)"
			}
			fmt.Fprintf(w, "  %s:%s\t\t%s%s\t\t\n", l.Digest.Algorithm(), l.Digest.Encoded()[:12], formatSize(l.Size), shared)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("image ls: %w", err)
	}
	return nil
}
