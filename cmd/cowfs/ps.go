package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

// psCommand is `cowfs ps [--size]`: the containers, with `docker ps -s`'s size and
// virtual size.
func psCommand() *cli.Command {
	return &cli.Command{
		Name:  "ps",
		Usage: "list containers; --size adds each one's size and virtual size and a total",
		Description: "SIZE is the bytes in a container's writable layer; VIRTUAL SIZE adds the\n" +
			"read-only layers of its image. Virtual sizes cannot be added up (containers\n" +
			"share layers): the total counts each shared layer once.",
		Flags: []cli.Flag{rootFlag(),
			&cli.BoolFlag{Name: "size", Aliases: []string{"s"}, Usage: "show sizes"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON (with sizes)"}},
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			if _, err := needArgs(c, 0, "[--size]"); err != nil {
				return err
			}
			s, err := openStore(c)
			if err != nil {
				return err
			}
			u, err := s.ContainerUsages()
			if err != nil {
				return err
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(u)
			}
			w := tabwriter.NewWriter(c.App.Writer, 0, 8, 2, ' ', 0)
			if c.Bool("size") {
				fmt.Fprintln(w, "NAME\tIMAGE\tMOUNTED\tSIZE\tVIRTUAL SIZE")
			} else {
				fmt.Fprintln(w, "NAME\tIMAGE\tMOUNTED")
			}
			for _, ct := range u.Containers {
				mounted := "no"
				if ct.Mounted {
					mounted = "yes"
				}
				if c.Bool("size") {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", ct.Name, ct.Image, mounted, formatSize(ct.Size), formatSize(ct.VirtualSize))
				} else {
					fmt.Fprintf(w, "%s\t%s\t%s\n", ct.Name, ct.Image, mounted)
				}
			}
			if c.Bool("size") {
				fmt.Fprintf(w, "TOTAL\t\t\t%s\t%s on disk (shared layers once)\n", formatSize(u.TotalSize), formatSize(u.TotalDisk))
			}
			if err := w.Flush(); err != nil {
				return fmt.Errorf("ps: %w", err)
			}
			return nil
		},
	}
}
