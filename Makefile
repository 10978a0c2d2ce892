# cowfs: a copy-on-write overlay filesystem over FUSE. See README.md.
GO ?= go
# Build tags of every cowfs binary, for a fast start (every mount starts it):
# urfave_cli_no_docs leaves out urfave/cli's man-page and markdown generation
# (blackfriday's package init); netgo,osusergo make the binary static (no dynamic
# loader and libc at each start; with cgo, cmd/cowfs/earlyfork_static.go links the C
# library statically under the same two tags). Keep scripts/demo.sh,
# integration/main_test.go and cmd/cowfs/main_test.go in step (TestEveryBuildUsesTheTags).
GOTAGS = urfave_cli_no_docs,netgo,osusergo

.PHONY: build demo test test-long setup vet

build:
	$(GO) build -tags $(GOTAGS) -o bin/cowfs ./cmd/cowfs

# Installs the packages the tests use (fuse3, fuse-overlayfs, attr) when missing.
setup:
	sh scripts/setup.sh

# Builds cowfs and runs it on a sample two-layer tree.
demo:
	sh scripts/demo.sh

vet:
	$(GO) vet ./...

# The default test run (CI): unit tests, real-mount behaviour suite against kernel
# overlayfs, posixtest, a bounded differential run, race detector on.
test:
	sh scripts/test.sh

# Long runs, not in CI: many differential sequences.
test-long: setup
	COWFS_DIFF_N=$${COWFS_DIFF_N:-10000} $(GO) test -count=1 -timeout 24h -run Differential ./integration/

# The reliability stress run (README.md, "Reliability"): 1,000 kills during copy-ups and
# 1,000 during mounts, 1,000,000 operations, long hostile-layer runs, 20 mounts; prints a
# summary of the figures (stress-out/summary.txt, log in stress-out/stress.log). As root.
.PHONY: stress
stress: setup
	sh scripts/stress.sh

# Side-by-side benchmark of kernel overlayfs, fuse-overlayfs and cowfs (README.md,
# "Benchmarks"): writes bench/RESULTS.md and bench/RESULTS.png. bench-quick checks the
# harness in a few minutes (bench/RESULTS-quick.md). As root.
.PHONY: bench bench-quick
bench: setup build
	sh bench/setup.sh
	BENCH_MAKE_TARGET=bench $(GO) run ./bench $(BENCH_FLAGS)

bench-quick: setup build
	sh bench/setup.sh
	BENCH_MAKE_TARGET=bench-quick $(GO) run ./bench -quick -out bench/RESULTS-quick.md $(BENCH_FLAGS)
