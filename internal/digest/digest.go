// Package digest is the small part of OCI content digests ("sha256:<hex>") that the
// layer store uses, with the API of github.com/opencontainers/go-digest. That module
// compiles four regexps when the binary starts, and every mount starts cowfs twice
// (the command and its daemon); this package checks by hand and costs nothing at start.
package digest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
)

// Algorithm names a digest algorithm ("sha256").
type Algorithm string

// The algorithms of the OCI image spec. Only SHA256 is computed here; the others are
// recognised (Validate accepts them) so that a layout using them gets a clear answer.
const (
	SHA256 Algorithm = "sha256"
	SHA384 Algorithm = "sha384"
	SHA512 Algorithm = "sha512"
	// Canonical is the algorithm of FromBytes.
	Canonical = SHA256
)

// The errors of Validate and Parse (the same texts as go-digest's).
var (
	ErrDigestInvalidFormat = errors.New("invalid checksum digest format")
	ErrDigestInvalidLength = errors.New("invalid checksum digest length")
	ErrDigestUnsupported   = errors.New("unsupported digest algorithm")
)

func (a Algorithm) String() string { return string(a) }

// size is the length of the algorithm's hash in bytes, 0 when unknown.
func (a Algorithm) size() int {
	switch a {
	case SHA256:
		return sha256.Size
	case SHA384:
		return 48
	case SHA512:
		return 64
	}
	return 0
}

// Digest is "algorithm:encoded", e.g. "sha256:" and 64 lower-case hex digits.
type Digest string

// NewDigestFromBytes is the digest of algorithm alg with the hash sum p.
func NewDigestFromBytes(alg Algorithm, p []byte) Digest {
	return NewDigestFromEncoded(alg, hex.EncodeToString(p))
}

// NewDigestFromEncoded is alg + ":" + encoded, not validated.
func NewDigestFromEncoded(alg Algorithm, encoded string) Digest {
	return Digest(string(alg) + ":" + encoded)
}

// FromBytes is the canonical (SHA256) digest of p.
func FromBytes(p []byte) Digest {
	s := sha256.Sum256(p)
	return NewDigestFromBytes(Canonical, s[:])
}

// Parse returns s as a Digest if it is a valid one.
func Parse(s string) (Digest, error) {
	d := Digest(s)
	return d, d.Validate()
}

// Validate checks the form: a known algorithm, then exactly as many lower-case hex
// digits as its hash has nibbles. An unknown algorithm that is well formed (lower-case
// letters and digits, maybe joined by . + _ -; then base64url-ish characters) is
// ErrDigestUnsupported, anything else malformed ErrDigestInvalidFormat.
func (d Digest) Validate() error {
	s := string(d)
	i := strings.IndexByte(s, ':')
	if i <= 0 || i+1 == len(s) {
		return ErrDigestInvalidFormat
	}
	alg, enc := Algorithm(s[:i]), s[i+1:]
	n := alg.size()
	if n == 0 {
		if wellFormed(s[:i], enc) {
			return ErrDigestUnsupported
		}
		return ErrDigestInvalidFormat
	}
	if len(enc) != 2*n {
		return ErrDigestInvalidLength
	}
	for j := 0; j < len(enc); j++ {
		if c := enc[j]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return ErrDigestInvalidFormat
		}
	}
	return nil
}

// wellFormed is the OCI grammar of a digest of any algorithm:
// algorithm = [a-z0-9]+ ([.+_-] [a-z0-9]+)*, encoded = [a-zA-Z0-9=_-]+.
func wellFormed(alg, enc string) bool {
	sep := true // at the start, and after a separator: a component must follow
	for i := 0; i < len(alg); i++ {
		switch c := alg[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
			sep = false
		case c == '.' || c == '+' || c == '_' || c == '-':
			if sep {
				return false
			}
			sep = true
		default:
			return false
		}
	}
	if sep {
		return false
	}
	for i := 0; i < len(enc); i++ {
		switch c := enc[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '=', c == '_', c == '-':
		default:
			return false
		}
	}
	return len(enc) > 0
}

// Algorithm is the part before the colon (call Validate first).
func (d Digest) Algorithm() Algorithm {
	alg, _, _ := strings.Cut(string(d), ":")
	return Algorithm(alg)
}

// Encoded is the part after the colon (call Validate first).
func (d Digest) Encoded() string {
	_, enc, _ := strings.Cut(string(d), ":")
	return enc
}

func (d Digest) String() string { return string(d) }
