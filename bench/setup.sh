#!/bin/sh
# Installs what the benchmark needs on Debian, if missing, beyond scripts/setup.sh's
# packages: fio (random I/O workload) and gnuplot-nox (the chart of the ratios).
set -eu
missing=""
command -v fio >/dev/null 2>&1 || missing="$missing fio"
command -v gnuplot >/dev/null 2>&1 || missing="$missing gnuplot-nox"
if [ -n "$missing" ]; then
	echo "bench setup: installing$missing"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
