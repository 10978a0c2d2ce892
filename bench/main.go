// Command bench measures cowfs side by side with kernel overlayfs and fuse-overlayfs
// over the same three-layer stack, and writes bench/RESULTS.md and a chart of the
// ratios. Run it as root through `make bench` (or `make bench-quick`); see README.md,
// section "Benchmarks".
//
// Each workload runs on each filesystem in turn (kernel, fuse-overlayfs, cowfs,
// kernel, ...), every run on a fresh upper and work directory, with setup outside
// the timer; the table reports medians and the ratios to the baselines.
package main

import (
	"context"
	"debug/buildinfo"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// config is every parameter of a benchmark run, from the flags.
type config struct {
	versions   string        // what was measured (versions), taken before the first results are written
	runs       int           // runs per workload and filesystem (the median is reported)
	files      int           // files in the merged tree of the stack
	bigSize    int64         // size of each big lower file (sequential read, copy-up)
	fioSize    int64         // size of the lower file fio works on
	fioIO      int64         // bytes fio reads and writes per run
	untarFiles int           // files in the archive the create workload unpacks
	chmodFiles int           // lower files the chmod workload copies up
	roundtrips int           // lgetxattr calls of roundtrip-getxattr; roundtrip-spaced makes a 25th
	only       string        // comma-separated workload names or prefixes; empty: all
	out        string        // the results file (Markdown)
	chart      string        // the chart of the ratios (PNG)
	cache      string        // where the stack is kept between runs, and runs happen
	cowfs      string        // the cowfs binary
	timeout    time.Duration // limit of one workload command
	command    string        // how this run was started, for the results file
}

func parseFlags() *config {
	c := &config{}
	quick := flag.Bool("quick", false, "small version to check the harness: 3 runs, 3,000 files, 64 MiB big files (explicit flags still win)")
	flag.IntVar(&c.runs, "runs", 5, "runs of each workload on each filesystem")
	flag.IntVar(&c.files, "files", 50000, "files in the merged tree of the layer stack")
	bigMiB := flag.Int64("bigsize", 1024, "size of the big lower files, in MiB")
	fioMiB := flag.Int64("fiosize", 256, "size of the file fio works on, in MiB")
	fioIOMiB := flag.Int64("fioio", 64, "MiB fio reads and writes per run (4 KiB random, half reads)")
	flag.IntVar(&c.untarFiles, "untar", 20000, "files unpacked (then removed) by the create workloads")
	flag.IntVar(&c.chmodFiles, "chmod", 5000, "lower files chmod copies up")
	flag.IntVar(&c.roundtrips, "roundtrips", 50000, "lgetxattr calls of roundtrip-getxattr (roundtrip-spaced makes a 25th of them)")
	flag.StringVar(&c.only, "only", "", "run only these workloads (comma-separated names or prefixes, e.g. walk,seqread-cold)")
	flag.StringVar(&c.out, "out", "bench/RESULTS.md", "results file; the chart goes next to it")
	flag.StringVar(&c.cache, "cache", "/var/tmp/cowfs-bench", "directory for the cached layer stack and the runs")
	flag.StringVar(&c.cowfs, "cowfs", "bin/cowfs", "the cowfs binary")
	flag.DurationVar(&c.timeout, "timeout", 15*time.Minute, "limit of one workload command")
	list := flag.Bool("list", false, "list the workloads and exit")
	flag.Parse()
	if *quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quickDefaults := []struct {
			name string
			val  string
		}{
			{"runs", "3"}, {"files", "3000"}, {"bigsize", "64"}, {"fiosize", "32"},
			{"fioio", "8"}, {"untar", "1000"}, {"chmod", "300"}, {"roundtrips", "2000"},
		}
		for _, d := range quickDefaults {
			if !set[d.name] {
				if err := flag.Set(d.name, d.val); err != nil {
					log.Fatal(err)
				}
			}
		}
	}
	c.bigSize = *bigMiB << 20
	c.fioSize = *fioMiB << 20
	c.fioIO = *fioIOMiB << 20
	ext := filepath.Ext(c.out)
	c.chart = strings.TrimSuffix(c.out, ext) + ".png"
	c.command = strings.TrimSpace("go run ./bench " + strings.Join(os.Args[1:], " "))
	if m := os.Getenv("BENCH_MAKE_TARGET"); m != "" {
		c.command = "make " + m + " (" + c.command + ")"
	}
	if *list {
		for _, w := range workloads(c) {
			fmt.Printf("%-26s %s\n", w.name, w.what)
		}
		os.Exit(0)
	}
	return c
}

func main() {
	log.SetFlags(log.Ltime)
	log.SetPrefix("bench: ")
	cfg := parseFlags()
	if os.Geteuid() != 0 {
		log.Fatal("must run as root (kernel overlayfs mounts, drop_caches)")
	}
	var err error
	if cfg.cowfs, err = filepath.Abs(cfg.cowfs); err != nil {
		log.Fatal(err)
	}
	if _, err := os.Stat(cfg.cowfs); err != nil {
		log.Fatalf("cowfs binary: %v (run make build)", err)
	}
	// A binary built without the Makefile's tags works but starts slower (mount latency).
	if bi, err := buildinfo.ReadFile(cfg.cowfs); err == nil {
		tags := ""
		for _, s := range bi.Settings {
			if s.Key == "-tags" {
				tags = s.Value
			}
		}
		if !strings.Contains(tags, "urfave_cli_no_docs") {
			log.Printf("warning: %s was built without the Makefile's -tags (GOTAGS): use make build", cfg.cowfs)
		}
	}
	// Before the run rewrites RESULTS.md, which would make the tree look modified.
	cfg.versions = versions(cfg)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		log.Print(err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg *config) error {
	ws, err := selectWorkloads(workloads(cfg), cfg.only)
	if err != nil {
		return err
	}
	unlock, err := lockCache(cfg)
	if err != nil {
		return err
	}
	defer unlock()
	if err := cleanStaleRuns(cfg); err != nil {
		return err
	}
	start := time.Now()
	st, err := loadOrBuildStack(ctx, cfg)
	if err != nil {
		return fmt.Errorf("building the layer stack: %w", err)
	}
	log.Printf("stack ready in %s: %s (%d files)", time.Since(start).Round(time.Second), st.Dir, len(st.Files))
	res := newResults(cfg, st, ws)
	start = time.Now()
	for _, w := range ws {
		for r := 0; r < cfg.runs && ctx.Err() == nil; r++ {
			for _, k := range allKinds() {
				if (w.kernelNA && k == kernelFS) || ctx.Err() != nil {
					continue
				}
				v, err := runOnce(ctx, cfg, st, w, k, r)
				if ctx.Err() != nil {
					break // an interrupted run is not a failure of the workload
				}
				res.add(w.name, k, v, err)
				if err != nil {
					log.Printf("%s %s run %d: FAILED: %v", w.name, k, r+1, err)
				} else {
					log.Printf("%s %s run %d: %.3f %s", w.name, k, r+1, v, w.unit)
				}
			}
		}
		if ctx.Err() != nil {
			break
		}
		// The results file is rewritten after every workload, so an interrupted run
		// still leaves the rows it finished (marked incomplete).
		res.done = append(res.done, w)
		res.elapsed = time.Since(start)
		if err := res.write(ctx); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		log.Printf("interrupted; %s has the %d workloads that finished", cfg.out, len(res.done))
		return ctx.Err()
	}
	log.Printf("wrote %s and %s (workloads took %s)", cfg.out, cfg.chart, res.elapsed.Round(time.Second))
	return nil
}

// runOnce runs workload w once on filesystem k: a fresh upper and work directory, the
// mount, the workload's setup, dropped caches for a cold figure, then the measured part.
// The mount is always undone and the run directory removed.
func runOnce(ctx context.Context, cfg *config, st *stack, w *workload, k fsKind, r int) (v float64, err error) {
	rd, err := newRunDir(cfg, fmt.Sprintf("%s-%s-%d", w.name, k, r))
	if err != nil {
		return 0, err
	}
	defer func() {
		if rerr := rd.remove(); rerr != nil && err == nil {
			err = rerr
		}
	}()
	e := &env{cfg: cfg, st: st, rd: rd, kind: k, volatile: w.volatile, metacopy: w.metacopy}
	if !w.selfMount {
		m, err := mountStack(ctx, e)
		if err != nil {
			return 0, err
		}
		e.m = m
		defer func() {
			if uerr := m.unmount(); uerr != nil && err == nil {
				err = uerr
			}
		}()
	}
	cctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	if w.prepare != nil {
		if err := w.prepare(cctx, e); err != nil {
			return 0, fmt.Errorf("setup: %w", err)
		}
	}
	if err := syncFS(); err != nil {
		return 0, err
	}
	if w.cold {
		if err := dropCaches(); err != nil {
			return 0, err
		}
	}
	return w.measure(cctx, e)
}

// lockCache makes sure one benchmark at a time uses the cache directory (a second
// one would clean up the first one's runs, and both would be timed under load).
func lockCache(cfg *config) (func(), error) {
	if err := os.MkdirAll(cfg.cache, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(cfg.cache, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another benchmark is using %s: %w", cfg.cache, err)
	}
	return func() { f.Close() }, nil
}
