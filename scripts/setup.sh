#!/bin/sh
# Installs what cowfs's build and tests need on Debian, if missing: fuse3 (fusermount3, mount.fuse3),
# fuse-overlayfs (the peer the tests and benchmarks compare with) and attr (getfattr).
set -eu
missing=""
command -v fusermount3 >/dev/null 2>&1 || missing="$missing fuse3"
command -v fuse-overlayfs >/dev/null 2>&1 || missing="$missing fuse-overlayfs"
command -v getfattr >/dev/null 2>&1 || missing="$missing attr"
# gcc and the static C library: cmd/cowfs/earlyfork.c (cgo), and go test -race.
command -v gcc >/dev/null 2>&1 || missing="$missing gcc"
dpkg -s libc6-dev >/dev/null 2>&1 || missing="$missing libc6-dev"
# strace: integration/options_test.go counts the daemon's fsyncs (volatile).
command -v strace >/dev/null 2>&1 || missing="$missing strace"
# The real clients of integration/rootfs_test.go and podman_test.go (they skip, saying so, without).
for p in podman:podman crun:crun runc:runc bwrap:bubblewrap newuidmap:uidmap busybox:busybox-static debootstrap:debootstrap; do
	command -v "${p%%:*}" >/dev/null 2>&1 || missing="$missing ${p#*:}"
done
if [ -n "$missing" ]; then
	echo "setup: installing$missing"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
# The unprivileged user of the rootless podman tests (integration/podman_test.go), with
# 65536 subordinate user and group IDs.
if [ "$(id -u)" = 0 ]; then
	id cowfs-test >/dev/null 2>&1 ||
		useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin cowfs-test
	grep -q '^cowfs-test:' /etc/subuid || usermod --add-subuids 1000000-1065535 cowfs-test
	grep -q '^cowfs-test:' /etc/subgid || usermod --add-subgids 1000000-1065535 cowfs-test
fi
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	echo "setup: add /usr/local/go/bin to PATH" >&2
fi
