#!/bin/sh
# The default test run (CI): installs what the tests need when missing, then unit tests,
# the real-mount behaviour suite against kernel overlayfs, posixtest, a bounded
# differential run, the layer store, with the race detector on.
set -eu
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
sh scripts/setup.sh
go vet ./...
go test -race -count=1 -timeout 30m ./...
