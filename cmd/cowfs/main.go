// Command cowfs mounts a copy-on-write overlay of read-only lower directories under a
// writable upper directory, over FUSE. It takes fuse-overlayfs's command line, so it
// can stand in for it as containers/storage's mount_program or behind mount.fuse3:
//
//	cowfs [-f] [-d] -o lowerdir=L1:L2,upperdir=U,workdir=W [SOURCE] MOUNTPOINT
//
// and it has subcommands with long flags (cowfs mount, cowfs help).
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cowfs/cowfs/layers"
)

// errReported is returned when the message has already been given (by the daemon to
// its parent) and the process only has to exit 1.
var errReported = errors.New("error already reported")

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// run runs the command line args (with the program name) and returns the exit code.
// Every error is one line "cowfs: ..." on stderr and exit code 1.
func run(args []string, stdout, stderr io.Writer) int {
	err := dispatch(args, stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errReported):
		return 1
	}
	fmt.Fprintf(stderr, "cowfs: %s\n", oneLine(err))
	return 1
}

// dispatch sends a subcommand to the urfave/cli app and anything else to the
// fuse-overlayfs-compatible parser.
func dispatch(args []string, stdout, stderr io.Writer) error {
	args = globalRoot(args)
	app := newApp(stdout, stderr)
	if len(args) > 1 && (args[1] == "help" || app.Command(args[1]) != nil) {
		return app.Run(args)
	}
	opts, err := layers.ParseArgs(args[1:])
	switch {
	case err != nil:
		return err
	case opts.Help:
		return app.Run([]string{args[0], "--help"})
	case opts.Version:
		printVersion(stdout)
		return nil
	}
	return start(opts)
}

// globalRoot takes a --root DIR given before the subcommand (`cowfs --root DIR ps`) as
// if it came after it, through the flag's environment variable.
func globalRoot(args []string) []string {
	if len(args) < 2 {
		return args
	}
	switch {
	case args[1] == "--root" && len(args) > 2:
		os.Setenv("COWFS_ROOT", args[2])
		return append([]string{args[0]}, args[3:]...)
	case strings.HasPrefix(args[1], "--root="):
		os.Setenv("COWFS_ROOT", strings.TrimPrefix(args[1], "--root="))
		return append([]string{args[0]}, args[2:]...)
	}
	return args
}

// oneLine keeps an error message on one line: a trailing newline (fusermount's
// messages have one) goes, an inner one is written as \n.
func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimRight(err.Error(), "\n "), "\n", `\n`)
}
