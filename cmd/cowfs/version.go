package main

import (
	"fmt"
	"io"
	"runtime/debug"
)

// version is the cowfs release, set at build time with
// -ldflags "-X main.version=1.2.3".
var version = "dev"

// fuseModule is the FUSE library whose version --version also prints, as
// fuse-overlayfs prints libfuse's.
const fuseModule = "github.com/hanwen/go-fuse/v2"

// printVersion prints "cowfs version X" and, when the binary carries it, the
// version of the FUSE library.
func printVersion(w io.Writer) {
	fmt.Fprintf(w, "cowfs version %s\n", version)
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	for _, dep := range info.Deps {
		if dep.Path == fuseModule {
			fmt.Fprintf(w, "FUSE library: go-fuse %s\n", dep.Version)
		}
	}
}
