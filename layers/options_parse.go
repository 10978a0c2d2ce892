package layers

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ignored reports the options that are accepted and have no effect. mount(8) and mount.fuse3 forward
// the atime family, defaults, owner and group to the helper (checked with
// fuse3 3.14's mount.fuse3: `mount -t fuse.cowfs overlay MNT -o ...` runs
// `cowfs overlay MNT -o OPTS`). mount.fuse3 3.14 strips auto, noauto, user,
// nouser, users, nofail and _netdev itself, but older helpers (libfuse 2's
// mount.fuse) pass some of them on, and they mean nothing to a filesystem.
// default_permissions is always on in cowfs. async is the default anyway.
func ignored(key string) bool {
	switch key {
	case "defaults", "default_permissions", "async",
		"atime", "noatime", "relatime", "norelatime", "strictatime", "nostrictatime",
		"diratime", "nodiratime", "lazytime", "nolazytime",
		"auto", "noauto", "user", "nouser", "users", "owner", "group", "nofail", "_netdev":
		return true
	}
	return false
}

// apply parses one comma-separated option string into o; later options override
// earlier ones. A backslash escapes the next character (\, \: \\ \"), a double-quoted
// stretch may hold commas and colons, and empty items (",,") are skipped.
func (o *Options) apply(s string) error {
	items, err := splitUnescaped(s, ',')
	if err != nil {
		return fmt.Errorf("option string %q: %w", s, err)
	}
	for _, item := range items {
		if item == "" {
			continue
		}
		if err := o.applyItem(item); err != nil {
			return err
		}
	}
	return nil
}

// applyItem applies one raw (still escaped) key[=value] item.
func (o *Options) applyItem(item string) error {
	rawKey, rawValue, hasValue := cutUnescaped(item, '=')
	key := unescape(rawKey)
	if flag := o.flag(key); flag != nil {
		if hasValue {
			return fmt.Errorf("option %q takes no value", key)
		}
		flag()
		return nil
	}
	if ignored(key) {
		if hasValue {
			return fmt.Errorf("option %q takes no value", key)
		}
		return nil
	}
	if !o.takesValue(key) {
		return fmt.Errorf("unknown option %q", key)
	}
	if !hasValue {
		return fmt.Errorf("option %q needs a value", key)
	}
	value := unescape(rawValue)
	switch key {
	case "lowerdir":
		lowers, err := SplitLowerdir(rawValue)
		if err != nil {
			return err
		}
		o.Lowers = lowers
	case "upperdir":
		if value == "" {
			return errors.New("empty path in upperdir")
		}
		o.Upper = value
	case "workdir":
		if value == "" {
			return errors.New("empty path in workdir")
		}
		o.Work = value
	case "context":
		o.Context = value
	case "uidmapping", "gidmapping":
		m, err := ParseIDMap(value)
		if err != nil {
			return fmt.Errorf("option %s: %w", key, err)
		}
		if key == "uidmapping" {
			o.UIDMap = m
		} else {
			o.GIDMap = m
		}
	case "squash_to_uid", "squash_to_gid":
		n, err := strconv.ParseUint(value, 10, 32)
		if err != nil {
			return fmt.Errorf("option %s=%q: want a number", key, value)
		}
		id := uint32(n)
		if key == "squash_to_uid" {
			o.SquashUID = &id
		} else {
			o.SquashGID = &id
		}
	case "metacopy":
		switch value {
		case "on":
			o.Metacopy = true
		case "off":
			o.Metacopy = false
		default:
			return fmt.Errorf("option metacopy=%q: want on or off", value)
		}
	case "xattr_permissions":
		switch value {
		case "0", "1", "2":
			o.XattrPermissions = int(value[0] - '0')
		default:
			return fmt.Errorf("option xattr_permissions=%q: want 0, 1 or 2", value)
		}
	case "fsync":
		switch value {
		case "0":
			o.Volatile = true
		case "1":
			o.Volatile = false
		default:
			return fmt.Errorf("option fsync=%q: want 0 or 1", value)
		}
	}
	return nil
}

// flag returns the setter of a value-less option, or nil if key is not one.
func (o *Options) flag(key string) func() {
	switch key {
	case "rw":
		return func() { o.ReadOnly = false }
	case "ro":
		return func() { o.ReadOnly = true }
	case "dev":
		return func() { o.NoDev = false }
	case "nodev":
		return func() { o.NoDev = true }
	case "suid":
		return func() { o.NoSuid = false }
	case "nosuid":
		return func() { o.NoSuid = true }
	case "exec":
		return func() { o.NoExec = false }
	case "noexec":
		return func() { o.NoExec = true }
	case "allow_other":
		return func() { o.AllowOther = true }
	case "volatile":
		return func() { o.Volatile = true }
	case "debug":
		return func() { o.Debug = true }
	case "squash_to_root":
		return func() { o.SquashToRoot = true }
	case "static_nlink":
		return func() { o.StaticNlink = true }
	case "noacl":
		return func() { o.NoACL = true }
	case "selinux_enodata":
		return func() { o.SELinuxENODATA = true }
	}
	return nil
}

func (o *Options) takesValue(key string) bool {
	switch key {
	case "lowerdir", "upperdir", "workdir", "context", "fsync", "metacopy",
		"uidmapping", "gidmapping", "squash_to_uid", "squash_to_gid", "xattr_permissions":
		return true
	}
	return false
}

// SplitLowerdir splits a lowerdir value (top:...:bottom) on the colons that are
// neither escaped (\:) nor inside double quotes, and unescapes each path.
func SplitLowerdir(s string) ([]string, error) {
	raw, err := splitUnescaped(s, ':')
	if err != nil {
		return nil, fmt.Errorf("lowerdir %q: %w", s, err)
	}
	lowers := make([]string, len(raw))
	for i, r := range raw {
		lowers[i] = unescape(r)
		if lowers[i] == "" {
			return nil, errors.New("empty path in lowerdir")
		}
	}
	return lowers, nil
}

// splitUnescaped splits s on every sep that is not escaped by a backslash and not
// inside double quotes. The pieces keep their escapes and quotes.
func splitUnescaped(s string, sep byte) ([]string, error) {
	var pieces []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			if i+1 >= len(s) {
				return nil, errors.New("backslash at the end")
			}
			i++
		case c == '"':
			quoted = !quoted
		case c == sep && !quoted:
			pieces = append(pieces, s[start:i])
			start = i + 1
		}
	}
	if quoted {
		return nil, errors.New("unterminated double quote")
	}
	return append(pieces, s[start:]), nil
}

// cutUnescaped is strings.Cut on the first sep that is neither escaped nor quoted.
// s must be a piece from splitUnescaped (balanced quotes, no trailing backslash).
func cutUnescaped(s string, sep byte) (before, after string, found bool) {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case c == sep && !quoted:
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// unescape drops the double quotes and turns each backslash pair into the
// character after the backslash.
func unescape(s string) string {
	if !strings.ContainsAny(s, `\"`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			if i+1 < len(s) {
				i++
				b.WriteByte(s[i])
			}
		case '"':
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// escape backslash-escapes the characters that ParseOptions treats specially.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\', ',', ':', '"', '=':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// escapeQuoted escapes s for use between double quotes.
func escapeQuoted(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return r.Replace(s)
}
