package digest

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	hex64 := strings.Repeat("0123456789abcdef", 4)
	for _, c := range []struct {
		name string
		d    string
		want error
	}{
		{"a sha256 digest is valid", "sha256:" + hex64, nil},
		{"a sha512 digest is valid", "sha512:" + hex64 + hex64, nil},
		{"a sha384 digest is valid", "sha384:" + hex64 + hex64[:32], nil},
		{"upper-case hex is a bad format", "sha256:" + strings.ToUpper(hex64), ErrDigestInvalidFormat},
		{"a short sha256 is a bad length", "sha256:" + hex64[:63], ErrDigestInvalidLength},
		{"a long sha256 is a bad length", "sha256:" + hex64 + "0", ErrDigestInvalidLength},
		{"no colon is a bad format", hex64, ErrDigestInvalidFormat},
		{"an empty algorithm is a bad format", ":" + hex64, ErrDigestInvalidFormat},
		{"an empty encoding is a bad format", "sha256:", ErrDigestInvalidFormat},
		{"the empty string is a bad format", "", ErrDigestInvalidFormat},
		{"an unknown well-formed algorithm is unsupported", "md5:abc", ErrDigestUnsupported},
		{"an algorithm with a separator is unsupported", "multihash+base58:QmRZ", ErrDigestUnsupported},
		{"an algorithm ending in a separator is a bad format", "md5+:abc", ErrDigestInvalidFormat},
		{"an unknown algorithm with a slash is a bad format", "md5:a/b", ErrDigestInvalidFormat},
		{"a path in the encoding of sha256 is a bad format", "sha256:../" + hex64[3:], ErrDigestInvalidFormat},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(c.d)
			if !errors.Is(err, c.want) || (err == nil) != (c.want == nil) {
				t.Fatalf("Parse(%q) = %v, want %v", c.d, err, c.want)
			}
		})
	}
}

// TestWellFormedIsTheOCIGrammar compares the hand-written grammar with the spec's
// regexp on short strings over an alphabet with every class of character.
func TestWellFormedIsTheOCIGrammar(t *testing.T) {
	re := regexp.MustCompile(`^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`)
	const alphabet = "a0.+_-Z=:/"
	var all []string
	var gen func(prefix string, n int)
	gen = func(prefix string, n int) {
		all = append(all, prefix)
		if n == 0 {
			return
		}
		for i := 0; i < len(alphabet); i++ {
			gen(prefix+alphabet[i:i+1], n-1)
		}
	}
	gen("", 5)
	for _, s := range all {
		alg, enc, ok := strings.Cut(s, ":")
		if got, want := ok && wellFormed(alg, enc), re.MatchString(s); got != want {
			t.Errorf("wellFormed(%q) = %v, the OCI regexp says %v", s, got, want)
		}
	}
}

func TestFromBytesAndParts(t *testing.T) {
	d := FromBytes([]byte("hello\n"))
	const want = "sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
	if d != want {
		t.Fatalf("FromBytes = %s, want %s", d, want)
	}
	if d.Algorithm() != SHA256 || d.Encoded() != want[7:] || d.String() != want {
		t.Fatalf("parts of %s: %q %q", d, d.Algorithm(), d.Encoded())
	}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
}
