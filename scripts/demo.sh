#!/bin/sh
# Builds cowfs and shows what it does on a sample two-layer tree: mounts it, writes,
# deletes, shows the merged view and the resulting upper directory, unmounts.
set -eu
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
sh scripts/setup.sh
go build -tags urfave_cli_no_docs,netgo,osusergo -o bin/cowfs ./cmd/cowfs  # tags: see the Makefile
d=$(mktemp -d /tmp/cowfs-demo.XXXXXX)
mkdir -p "$d/base/etc" "$d/app/etc" "$d/upper" "$d/work" "$d/merged"
echo "base motd" >"$d/base/etc/motd"
echo "base hosts" >"$d/base/etc/hosts"
mkdir -p "$d/base/var/cache" && echo junk >"$d/base/var/cache/old"
echo "app config" >"$d/app/etc/app.conf"
echo "app motd" >"$d/app/etc/motd"
set -x
bin/cowfs -o lowerdir="$d/app:$d/base",upperdir="$d/upper",workdir="$d/work" "$d/merged"
find "$d/merged" | sort
cat "$d/merged/etc/motd"                 # the app layer wins over the base
echo "edited" >>"$d/merged/etc/hosts"    # copy-up on first write
rm "$d/merged/etc/app.conf"              # a whiteout hides the lower file
rm -r "$d/merged/var/cache" && mkdir "$d/merged/var/cache"   # an opaque directory
echo new >"$d/merged/var/cache/fresh"
ls -la "$d/upper/etc" "$d/upper/var/cache"
getfattr -d -m - "$d/upper/var/cache" 2>/dev/null || true
cat "$d/upper/etc/hosts"
fusermount3 -u "$d/merged"
set +x
echo "lower layers untouched:"; cat "$d/base/etc/hosts"; ls "$d/app/etc"
rm -rf "$d"
