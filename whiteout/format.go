package whiteout

import (
	"errors"
	"fmt"

	"github.com/cowfs/cowfs/internal/sysx"
	"golang.org/x/sys/unix"
)

// Format is how this mount writes markers, probed once at mount in the work directory.
type Format struct {
	// XattrPrefix is "trusted." when the daemon may set trusted xattrs, else "user.".
	XattrPrefix string
	// CharDev: whiteouts are char 0/0 devices; otherwise `.wh.NAME` files.
	CharDev bool
}

// Probe finds the format the daemon can write, by trying it in the work dir workfd.
func Probe(workfd int) (Format, error) {
	f := Format{XattrPrefix: UserPrefix}
	const probe = "cowfs-probe"
	_ = unix.Unlinkat(workfd, probe, 0)
	if err := unix.Mknodat(workfd, probe, unix.S_IFCHR, 0); err == nil {
		f.CharDev = true
		_ = unix.Unlinkat(workfd, probe, 0)
	}
	if err := unix.Mkdirat(workfd, probe, 0o700); err != nil {
		return f, fmt.Errorf("probe work dir: %w", err)
	}
	defer unix.Unlinkat(workfd, probe, unix.AT_REMOVEDIR)
	if err := sysx.Setxattr(workfd, probe, TrustedPrefix+OpaqueXattr, []byte("y"), 0); err == nil {
		f.XattrPrefix = TrustedPrefix
	} else if err := sysx.Setxattr(workfd, probe, UserPrefix+OpaqueXattr, []byte("y"), 0); err != nil {
		return f, fmt.Errorf("work dir supports neither trusted nor user xattrs: %w", err)
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

// SetOpaque marks directory name in dirfd opaque.
func (f Format) SetOpaque(dirfd int, name string) error {
	if err := sysx.Setxattr(dirfd, name, f.OpaqueAttr(), []byte("y"), 0); err != nil {
		return fmt.Errorf("mark %q opaque: %w", name, err)
	}
	return nil
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
