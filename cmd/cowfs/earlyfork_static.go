//go:build cgo && linux && netgo && osusergo

package main

// With cgo, a static binary starts as fast as a pure Go one (12 ms on the benchmark
// machine) where a dynamically linked one pays the loader and glibc's relocations
// (2.5 ms more). The Makefile's tags (netgo, osusergo) leave nothing that needs the
// C library's name services, which do not work statically linked; builds without
// them (go test's) link dynamically.

// #cgo LDFLAGS: -static
import "C"
