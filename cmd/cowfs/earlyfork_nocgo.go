//go:build !cgo || !linux

package main

// earlyReportFD is -1 without cgo: earlyfork.c is not built, and a mount
// re-executes the binary as its daemon (daemon_linux.go).
func earlyReportFD() int { return -1 }
