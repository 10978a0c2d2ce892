package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/cowfs/cowfs/layers/store"
	"github.com/urfave/cli/v2"
)

// layerCommand is `cowfs layer`: import, export, list, remove and verify stored layers.
func layerCommand() *cli.Command {
	return &cli.Command{
		Name:  "layer",
		Usage: "manage the content-addressed layers of the store",
		Subcommands: []*cli.Command{
			{
				Name:  "import",
				Usage: "store a layer from a tar (plain, gzip or zstd; - for stdin) or a directory; prints its digest",
				Description: "A tar is an OCI/Docker layer (.wh.NAME whiteouts, .wh..wh..opq opaque markers);\n" +
					"its digest is the sha256 of the uncompressed tar (the diff ID). A directory is\n" +
					"stored as the canonical tar cowfs writes of it (see layer export).",
				ArgsUsage:    "FILE|DIR|-",
				Flags:        []cli.Flag{rootFlag()},
				OnUsageError: usageError,
				Action:       layerImport,
			},
			{
				Name:         "export",
				Usage:        "write a layer as a tar to stdout",
				ArgsUsage:    "DIGEST",
				Flags:        []cli.Flag{rootFlag()},
				OnUsageError: usageError,
				Action: func(c *cli.Context) error {
					s, args, err := storeArgs(c, 1, "DIGEST")
					if err != nil {
						return err
					}
					_, err = s.ExportLayer(c.App.Writer, args[0])
					return err
				},
			},
			{
				Name:         "ls",
				Usage:        "list the stored layers",
				Flags:        []cli.Flag{rootFlag()},
				OnUsageError: usageError,
				Action: func(c *cli.Context) error {
					s, err := openStore(c)
					if err != nil {
						return err
					}
					ls, err := s.Layers()
					if err != nil {
						return err
					}
					w := tabwriter.NewWriter(c.App.Writer, 0, 8, 2, ' ', 0)
					fmt.Fprintln(w, "DIGEST\tSIZE\tCREATED")
					for _, l := range ls {
						fmt.Fprintf(w, "%s\t%s\t%s\n", l.Digest, formatSize(l.Size), l.Created.Format("2006-01-02 15:04:05"))
					}
					return w.Flush()
				},
			},
			{
				Name:         "rm",
				Usage:        "remove a layer no image uses",
				ArgsUsage:    "DIGEST",
				Flags:        []cli.Flag{rootFlag()},
				OnUsageError: usageError,
				Action: func(c *cli.Context) error {
					s, args, err := storeArgs(c, 1, "DIGEST")
					if err != nil {
						return err
					}
					l, err := s.RemoveLayer(args[0])
					if err == nil {
						fmt.Fprintln(c.App.Writer, l.Digest)
					}
					return err
				},
			},
			{
				Name:         "verify",
				Usage:        "re-hash every layer; exit 1 if any no longer matches its digest",
				Flags:        []cli.Flag{rootFlag()},
				OnUsageError: usageError,
				Action: func(c *cli.Context) error {
					s, err := openStore(c)
					if err != nil {
						return err
					}
					res, err := s.Verify()
					if err != nil {
						return err
					}
					bad := 0
					for _, r := range res {
						if r.Err != nil {
							bad++
							fmt.Fprintf(c.App.Writer, "%s FAILED: %s\n", r.Layer.Digest, oneLine(r.Err))
						} else {
							fmt.Fprintf(c.App.Writer, "%s ok\n", r.Layer.Digest)
						}
					}
					if bad > 0 {
						return fmt.Errorf("%d of %d layers do not match their digests", bad, len(res))
					}
					return nil
				},
			},
		},
	}
}

// layerImport is `cowfs layer import FILE|DIR|-`.
func layerImport(c *cli.Context) error {
	s, args, err := storeArgs(c, 1, "FILE|DIR|-")
	if err != nil {
		return err
	}
	src := args[0]
	var l store.Layer
	switch fi, statErr := os.Stat(src); {
	case src == "-":
		r, done := progress(os.Stdin, -1, "importing")
		l, err = s.ImportLayer(r, store.ImportOptions{})
		done()
	case statErr != nil:
		return fmt.Errorf("layer import: %w", statErr)
	case fi.IsDir():
		l, err = s.ImportDir(src)
	default:
		f, err2 := os.Open(src)
		if err2 != nil {
			return fmt.Errorf("layer import: %w", err2)
		}
		defer f.Close()
		r, done := progress(f, fi.Size(), "importing")
		l, err = s.ImportLayer(r, store.ImportOptions{})
		done()
	}
	if err != nil {
		return fmt.Errorf("layer import %s: %w", src, err)
	}
	fmt.Fprintln(c.App.Writer, l.Digest)
	return nil
}
