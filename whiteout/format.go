package whiteout

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cowfs/cowfs/internal/sysx"
	"golang.org/x/sys/unix"
)

// Format is how this mount writes markers, probed once at mount in the work directory.
type Format struct {
	// XattrPrefix is "trusted." when the daemon may set trusted xattrs, else "user.",
	// and "" when the upper filesystem takes no xattrs at all: opaque directories then
	// hold a `.wh..wh..opq` file (fuse-overlayfs's and OCI's marker) and copied-up
	// objects record no origin.
	XattrPrefix string
	// CharDev: whiteouts are char 0/0 devices; otherwise `.wh.NAME` files.
	CharDev bool
	// Fallbacks says, one phrase each, what this mount does instead of the kernel's
	// format and why (empty when it writes the kernel's format); cowfs -d prints it.
	Fallbacks []string
}

// ForceEnv names the environment variable that makes Probe act as if privileges were
// missing, to test the fallbacks on a machine that has them: a comma-separated list of
// "mknod" (whiteouts as .wh. files), "trusted" (user.overlay.* xattrs) and "xattr" (no
// xattrs: .wh..wh..opq files).
const ForceEnv = "COWFS_FORCE_FALLBACK"

// Probe finds the format the daemon can write, by trying it in the work dir workfd.
// force lists the privileges to treat as missing (see ForceEnv).
func Probe(workfd int, force ...string) (Format, error) {
	forced := map[string]bool{}
	for _, f := range force {
		forced[f] = true
	}
	f := Format{XattrPrefix: UserPrefix}
	const probe = "cowfs-probe"
	_ = unix.Unlinkat(workfd, probe, 0)
	errForced := fmt.Errorf("treated as refused (%s)", ForceEnv)
	var err error = errForced
	if !forced["mknod"] {
		err = unix.Mknodat(workfd, probe, unix.S_IFCHR, 0)
	}
	if err == nil {
		f.CharDev = true
		_ = unix.Unlinkat(workfd, probe, 0)
	} else {
		f.Fallbacks = append(f.Fallbacks, fmt.Sprintf("whiteouts are .wh.NAME files (mknod 0/0: %v)", err))
	}
	if err := unix.Mkdirat(workfd, probe, 0o700); err != nil {
		return f, fmt.Errorf("probe work dir: %w", err)
	}
	defer unix.Unlinkat(workfd, probe, unix.AT_REMOVEDIR)
	try := func(prefix string) error {
		if forced[strings.TrimSuffix(prefix, ".")] || forced["xattr"] {
			return errForced
		}
		return sysx.Setxattr(workfd, probe, prefix+OpaqueXattr, []byte("y"), 0)
	}
	terr := try(TrustedPrefix)
	switch {
	case terr == nil:
		f.XattrPrefix = TrustedPrefix
	case try(UserPrefix) == nil:
		f.Fallbacks = append(f.Fallbacks, fmt.Sprintf("markers are user.overlay.* xattrs (trusted.*: %v)", terr))
	default:
		f.XattrPrefix = ""
		f.Fallbacks = append(f.Fallbacks, fmt.Sprintf("opaque directories hold a %s file, no origin is recorded (no trusted.* or user.* xattrs: %v)", OpaqueName, terr))
	}
	return f, nil
}

// OpaqueAttr is the full name of the opaque xattr this mount writes.
func (f Format) OpaqueAttr() string { return f.XattrPrefix + OpaqueXattr }

// Create writes a whiteout for name in dirfd (an upper directory). The name must not exist.
func (f Format) Create(dirfd int, name string) error {
	if f.CharDev {
		if err := unix.Mknodat(dirfd, name, unix.S_IFCHR, 0); err != nil {
			return fmt.Errorf("whiteout %q: %w", name, err)
		}
		return nil
	}
	fd, err := unix.Openat(dirfd, Prefix+name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o000)
	if err != nil {
		return fmt.Errorf("whiteout %q: %w", name, err)
	}
	return unix.Close(fd)
}

// SetOpaque marks directory name in dirfd opaque: with the overlay.opaque xattr, or a
// `.wh..wh..opq` file in it when the upper takes no xattrs.
func (f Format) SetOpaque(dirfd int, name string) error {
	if f.XattrPrefix == "" {
		if err := createOpaqueFile(dirfd, name); err != nil {
			return fmt.Errorf("mark %q opaque: %w", name, err)
		}
		return nil
	}
	if err := sysx.Setxattr(dirfd, name, f.OpaqueAttr(), []byte("y"), 0); err != nil {
		return fmt.Errorf("mark %q opaque: %w", name, err)
	}
	return nil
}

func createOpaqueFile(dirfd int, name string) error {
	dir, err := sysx.OpenBeneath(dirfd, name, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dir)
	fd, err := unix.Openat(dir, OpaqueName, unix.O_CREAT|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// Kind is what an upper directory holds at a name, as far as whiteouts go.
type Kind int

const (
	// None: no entry and no whiteout.
	None Kind = iota
	// Entry: a real entry.
	Entry
	// CharWhiteout: a char 0/0 whiteout sits at the name.
	CharWhiteout
	// FileWhiteout: a `.wh.NAME` file hides the name.
	FileWhiteout
)

// At tells what the upper directory dirfd holds at name.
func At(dirfd int, name string) (Kind, error) {
	var st unix.Stat_t
	err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil:
		if IsCharWhiteout(&st) {
			return CharWhiteout, nil
		}
		return Entry, nil
	case errors.Is(err, unix.ENOENT):
		ok, err := HasWhiteoutFile(dirfd, name)
		if err != nil {
			return None, err
		}
		if ok {
			return FileWhiteout, nil
		}
		return None, nil
	default:
		return None, err
	}
}

// Remove deletes a whiteout of kind k for name in dirfd.
func Remove(dirfd int, name string, k Kind) error {
	switch k {
	case CharWhiteout:
		return unix.Unlinkat(dirfd, name, 0)
	case FileWhiteout:
		return unix.Unlinkat(dirfd, Prefix+name, 0)
	}
	return nil
}
