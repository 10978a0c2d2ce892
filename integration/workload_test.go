package integration

import (
	"fmt"
	"strings"
)

// The workload the client tests run inside a container whose rootfs is the
// test image (image_test.go), on cowfs and on kernel overlayfs alike. It is a
// POSIX sh script (busybox's sh or Debian's dash), deterministic so that both
// filesystems end up with the same upper directory. It prints workloadDone as
// its last line when every step and check passed.

const workloadDone = "COWFS-WORKLOAD-DONE"

// bigFileSize is the size of the file the workload writes and fsyncs.
const bigFileSize = 64 << 20

// workloadDeleted are the names the workload itself removes (absolute
// paths); with the image's hidden names they must all be ENOENT afterwards,
// inside the container and on a fresh mount.
func workloadDeleted(im *testImage) []string {
	d := []string{
		"/app/delete-me", "/app/rename-src", "/root/new-file",
		"/var/lib/data/a", "/var/lib/data/b", "/var/lib/data/sub", "/var/lib/data/sub/c",
		"/var/lib/data/hl1", "/var/lib/data/hl2", "/var/lib/data/gone",
		"/var/lib/links/l2", "/opq/new", "/opq/made", "/etc/motd.tmp",
	}
	if im.debian {
		d = append(d, "/usr/bin/nl", "/var/log/dpkg.log")
	} else {
		d = append(d, "/usr/bin/wget")
	}
	return d
}

// allDeleted is every name that must not be found after the workload.
func allDeleted(im *testImage) []string {
	return append(append([]string{}, im.hidden...), workloadDeleted(im)...)
}

// workloadScript is the script for im.
func workloadScript(im *testImage) string {
	var b strings.Builder
	b.WriteString(`set -eu
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
umask 022
fail() { echo "WORKLOAD FAILED: $*"; exit 1; }
# create, and modify files of every layer
echo created > /root/new-file
mkdir -p /srv/www/html
echo '<h1>cowfs</h1>' > /srv/www/html/index.html
echo appended >> /etc/motd
echo version=3 > /app/etc/config
printf x >> /app/big.bin
[ "$(cat /etc/motd)" = "layer2 motd
appended" ] || fail "motd: $(cat /etc/motd)"
# an atomic replace, as editors and package managers do
cp /etc/motd /etc/motd.tmp && echo replaced >> /etc/motd.tmp && mv /etc/motd.tmp /etc/motd
# delete and rename
rm /app/delete-me
mv /app/rename-src /app/rename-dst
mv /root/new-file /root/renamed-file
# modes and owners
chmod 0700 /app/chmod-me
chmod 4755 /app/bin/hello.sh
chown 1000:1000 /app/owned
mkdir /home/shared && chown 1000:1000 /home/shared && chmod 2775 /home/shared
echo mine > /home/shared/file && chown 1000:1000 /home/shared/file
# hard links: of a lower file, of an upper file, one name of a lower link
ln /app/bin/hello.sh /app/bin/hello-link
ln /srv/www/html/index.html /srv/www/index-link
echo more >> /var/lib/links/l1
rm /var/lib/links/l2
[ "$(cat /app/bin/hello-link)" = "$(cat /app/bin/hello.sh)" ] || fail "hard link content"
# a symlink, and running a program from a layer
ln -s /app/bin/hello.sh /usr/local/bin/hello
[ "$(hello)" = "hello from layer1" ] || fail "hello: $(hello)"
# a directory with lower content removed and made again (opaque), a file
# created and removed in it
rm -rf /var/lib/data
mkdir /var/lib/data
echo fresh > /var/lib/data/fresh
echo gone > /var/lib/data/gone
rm /var/lib/data/gone
# the opaque directory of layer2: remove its file, a directory made and removed
rm /opq/new
mkdir /opq/made && rmdir /opq/made
echo after > /opq/after
`)
	if im.debian {
		b.WriteString(`# a base file removed; a local package installed with dpkg
rm /usr/bin/nl
dpkg -i /opt/pkgs/cowfs-hello.deb >/tmp/dpkg.out 2>&1 || { cat /tmp/dpkg.out; fail "dpkg -i"; }
rm -f /tmp/dpkg.out
[ "$(cowfs-hello)" = "hello from a .deb" ] || fail "installed program"
dpkg -s cowfs-hello | grep -q '^Status: install ok installed' || fail "dpkg -s"
dpkg -L cowfs-hello | grep -q /usr/share/cowfs-hello/data/payload.txt || fail "dpkg -L"
# dpkg's log has times in it: not comparable between two runs
rm -f /var/log/dpkg.log
`)
	} else {
		b.WriteString("# a base file removed\nrm /usr/bin/wget\n")
	}
	fmt.Fprintf(&b, `# a large file, fsynced
yes 0123456789abcdef | head -c %d | dd of=/big.bin bs=1M conv=fsync 2>/dev/null
[ "$(wc -c < /big.bin)" -eq %d ] || fail "big file size $(wc -c < /big.bin)"
sync
# every deleted name is gone: not found by name, not listed
for n in %s; do
	if msg=$(ls -d "$n" 2>&1); then fail "deleted $n is still there"; fi
	case "$msg" in *"No such file or directory"*) ;; *) fail "$n: $msg";; esac
	case " $(ls -a "$(dirname "$n")" 2>/dev/null | tr '\n' ' ') " in *" $(basename "$n") "*) fail "deleted $n is listed";; esac
done
echo %s
`, bigFileSize, bigFileSize, strings.Join(allDeleted(im), " "), workloadDone)
	return b.String()
}
