//go:build cgo && linux

package main

// extern int cowfs_report_fd;
import "C"

// earlyReportFD is the report pipe of a daemon forked by earlyfork.c before the
// Go runtime started, or -1 when this process was not forked so.
func earlyReportFD() int { return int(C.cowfs_report_fd) }
