package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/cowfs/cowfs/layers/store"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

// catStore groups the flags every store subcommand has.
const catStore = "Store"

// rootFlag is the store root of the layer, image, container, ps, diff and commit
// subcommands.
func rootFlag() cli.Flag {
	return &cli.StringFlag{Name: "root", Category: catStore, EnvVars: []string{"COWFS_ROOT"},
		Usage: "store `DIR` (default /var/lib/cowfs for root, else $XDG_DATA_HOME/cowfs or ~/.local/share/cowfs)"}
}

// openStore opens the store of --root (or the default one).
func openStore(c *cli.Context) (*store.Store, error) {
	root := c.String("root")
	if root == "" {
		var err error
		if root, err = store.DefaultRoot(); err != nil {
			return nil, err
		}
	}
	return store.Open(root)
}

// storeArgs returns the store of --root and the n positional arguments (see needArgs).
func storeArgs(c *cli.Context, n int, usage string) (*store.Store, []string, error) {
	args, err := needArgs(c, n, usage)
	if err != nil {
		return nil, nil, err
	}
	s, err := openStore(c)
	return s, args, err
}

// needArgs returns the n positional arguments, applying the flags written after them
// (`cowfs container create IMAGE --name N`), which urfave/cli v2 leaves as arguments.
func needArgs(c *cli.Context, n int, usage string) ([]string, error) {
	pos, err := positional(c)
	if err != nil {
		return nil, err
	}
	if n >= 0 && len(pos) != n || n < 0 && len(pos) < -n {
		return nil, fmt.Errorf("usage: cowfs %s %s", c.Command.FullName(), usage)
	}
	return pos, nil
}

// positional splits c's arguments into positionals and flags of c's command, setting
// the flags.
func positional(c *cli.Context) ([]string, error) {
	var pos []string
	args := c.Args().Slice()
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(pos, args[i+1:]...), nil
		}
		if a == "-" || !strings.HasPrefix(a, "-") {
			pos = append(pos, a)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		var flag cli.Flag
		for _, f := range c.Command.Flags {
			if slices.Contains(f.Names(), name) {
				flag = f
			}
		}
		if flag == nil {
			return nil, fmt.Errorf("flag provided but not defined: -%s", name)
		}
		if _, isBool := flag.(*cli.BoolFlag); isBool && !hasVal {
			val, hasVal = "true", true
		}
		if !hasVal {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("flag needs an argument: -%s", name)
			}
			i++
			val = args[i]
		}
		if err := c.Set(name, val); err != nil {
			return nil, fmt.Errorf("flag -%s: %w", name, err)
		}
	}
	return pos, nil
}

// formatSize writes a size like `docker ps -s`: exact bytes below 1 kB, else SI units.
func formatSize(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}

// progressMin is the size from which an import shows a progress bar.
const progressMin = 32 << 20

// progress wraps r with a progress bar on stderr when stderr is a terminal and the
// input is large (size, or unknown: -1). The bar is cleared when done is called.
func progress(r io.Reader, size int64, label string) (io.Reader, func()) {
	if (size >= 0 && size < progressMin) || !isTerminal(os.Stderr) {
		return r, func() {}
	}
	p := &progressReader{r: r, size: size, label: label, last: time.Now()}
	return p, func() { fmt.Fprint(os.Stderr, "\r\033[K") }
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

type progressReader struct {
	r     io.Reader
	size  int64
	n     int64
	label string
	last  time.Time
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if time.Since(p.last) > 200*time.Millisecond || err == io.EOF {
		p.last = time.Now()
		if p.size > 0 {
			const width = 30
			done := int(min(p.n, p.size) * width / p.size)
			bar := fmt.Sprintf("%-*s", width, string(repeat('=', done)))
			fmt.Fprintf(os.Stderr, "\r%s [%s] %s / %s", p.label, bar, formatSize(p.n), formatSize(p.size))
		} else {
			fmt.Fprintf(os.Stderr, "\r%s %s", p.label, formatSize(p.n))
		}
	}
	return n, err
}

func repeat(c byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}
