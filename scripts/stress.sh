#!/bin/sh
# The reliability stress run (make stress; README.md, "Reliability"): the long modes of
# the reliability tests in integration/, then a summary of their figures. As root.
# Smaller runs: set any of the variables below before calling it.
set -eu
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
: "${COWFS_CRASH_KILLS:=1000}"          # kill -9 during copy-ups and writes, then remount and check
: "${COWFS_CRASH_MOUNT_KILLS:=1000}"    # kill -9 while the daemon mounts
: "${COWFS_LOAD_OPS:=1000000}"          # operations of the long run (fds and memory watched)
: "${COWFS_HOSTILE_ROUNDS:=20}"         # rounds of every operation on every hostile symlink path
: "${COWFS_HOSTILE_SWAP_SECONDS:=120}"  # seconds of a layer dir swapped for a symlink and back
: "${COWFS_HOSTILE_DEPTH:=10000}"       # levels of the deep tree walked through the mount
: "${COWFS_HOSTILE_CREATE_DEPTH:=5000}" # a file created this deep (copying up every directory above)
: "${COWFS_MOUNTS_OPS:=300}"            # rounds of the mixed workload on each of 20 mounts
: "${COWFS_STORM_OPS:=2000}"            # names per process of the one-directory storm
export COWFS_CRASH_KILLS COWFS_CRASH_MOUNT_KILLS COWFS_LOAD_OPS COWFS_HOSTILE_ROUNDS \
	COWFS_HOSTILE_SWAP_SECONDS COWFS_HOSTILE_DEPTH COWFS_HOSTILE_CREATE_DEPTH COWFS_MOUNTS_OPS COWFS_STORM_OPS
out=${COWFS_STRESS_OUT:-stress-out}
mkdir -p "$out"
COWFS_STRESS_SUMMARY=$(pwd)/$out/summary.txt
export COWFS_STRESS_SUMMARY
: > "$COWFS_STRESS_SUMMARY"
tests='TestCrash|TestFullUpperENOSPC|TestUnmount|TestSecondMountRefused|TestDaemonKilledRestart|TestHostile|TestUsers|TestOptionStrings|TestSixteenProcesses|TestStormOneDirectory|TestTwentyMounts|TestLongRunNoLeaks'
start=$(date +%s)
status=0
go test -count=1 -timeout 8h -run "$tests" -v ./integration/ > "$out/stress.log" 2>&1 || status=$?
end=$(date +%s)
failed=$(grep -c -- '^\s*--- FAIL' "$out/stress.log" || true)
echo "cowfs reliability stress run, $(date -u '+%Y-%m-%d %H:%M UTC'), $(( (end - start) / 60 )) min, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "settings: kills=$COWFS_CRASH_KILLS mount-kills=$COWFS_CRASH_MOUNT_KILLS ops=$COWFS_LOAD_OPS hostile-rounds=$COWFS_HOSTILE_ROUNDS swap-seconds=$COWFS_HOSTILE_SWAP_SECONDS depth=$COWFS_HOSTILE_DEPTH create-depth=$COWFS_HOSTILE_CREATE_DEPTH mounts-ops=$COWFS_MOUNTS_OPS storm-ops=$COWFS_STORM_OPS"
cat "$COWFS_STRESS_SUMMARY"
echo "divergences (failed tests and subtests): $failed; full log: $out/stress.log"
exit $status
