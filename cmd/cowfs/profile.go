package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
)

// Developer switches for the process that serves a mount (the daemon, or cowfs -f),
// read from its environment (README, "Profiling the daemon"):
//
//	COWFS_MEMPROFILE=PATH  a heap profile (after a GC) to PATH on SIGUSR1 and at exit
//	COWFS_CPUPROFILE=PATH  a CPU profile from the mount to the exit
//
// Failures are printed to stderr (the daemon's is /dev/null unless -d) and ignored:
// profiling never changes what the mount does.
const (
	memProfileEnv = "COWFS_MEMPROFILE"
	cpuProfileEnv = "COWFS_CPUPROFILE"
)

// startProfiles starts what the environment asks for; the returned function, called
// when serving ends, writes the final profiles.
func startProfiles() (stop func()) {
	memPath, cpuPath := os.Getenv(memProfileEnv), os.Getenv(cpuProfileEnv)
	if memPath == "" && cpuPath == "" {
		return func() {}
	}
	var cpuFile *os.File
	if cpuPath != "" {
		f, err := os.Create(cpuPath)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "cowfs: %s: %v\n", cpuProfileEnv, err)
		} else {
			cpuFile = f
		}
	}
	usr1 := make(chan os.Signal, 1)
	done := make(chan struct{})
	if memPath != "" {
		signal.Notify(usr1, syscall.SIGUSR1)
		go func() {
			for {
				select {
				case <-usr1:
					writeHeapProfile(memPath)
				case <-done:
					return
				}
			}
		}()
	}
	return func() {
		if cpuFile != nil {
			pprof.StopCPUProfile()
			cpuFile.Close()
		}
		if memPath != "" {
			signal.Stop(usr1)
			close(done)
			writeHeapProfile(memPath)
		}
	}
}

// writeHeapProfile writes the heap profile of now (a GC first: a heap profile shows
// the state as of the last completed GC) to path, atomically.
func writeHeapProfile(path string) {
	runtime.GC()
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err == nil {
		err = pprof.Lookup("heap").WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cowfs: %s: %v\n", memProfileEnv, err)
	}
}
