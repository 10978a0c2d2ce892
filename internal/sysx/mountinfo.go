package sysx

import (
	"strconv"
	"strings"
)

// UnescapeMountinfo undoes the kernel's octal escapes (\040 for a space, \011, \012,
// \134) in a /proc/*/mountinfo path (fs/proc_namespace.c, mangle()).
func UnescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
