package sad

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ErrSyntax is wrapped by every error of the spec parsers, so callers can
// tell a bad spec (the user's input) from other failures.
var ErrSyntax = errors.New("bad spec")

// SpecError is a parse error: one line saying which word is wrong and
// what would be right. Word never holds key material (see redact).
type SpecError struct {
	// Index is the 0-based position of the offending word, -1 when the
	// error is about the spec as a whole.
	Index int
	// Word is the offending word, redacted when it could be a key.
	Word string
	// Msg says what is wrong and what is allowed.
	Msg string
}

func (e *SpecError) Error() string {
	if e.Index < 0 {
		return e.Msg
	}
	return fmt.Sprintf("word %d %q: %s", e.Index+1, e.Word, e.Msg)
}

// Unwrap makes every SpecError match ErrSyntax.
func (e *SpecError) Unwrap() error { return ErrSyntax }

// redact returns w unless it could be key material: a long hex number
// or a long word is shown by its shape only.
func redact(w string) string {
	if strings.HasPrefix(w, "0x") && len(w) > 18 {
		return fmt.Sprintf("<%d hex digits>", len(w)-2)
	}
	if len(w) > 40 {
		return fmt.Sprintf("<%d characters>", len(w))
	}
	return w
}

// Tokenize splits one config-file line into words the way a POSIX shell
// would for the subset specs use: blanks separate words, '...' and "..."
// quote (a quoted empty string is an empty word, as iproute2 takes an
// empty key), backslash escapes the next character outside single quotes,
// and an unquoted # starts a comment that runs to the end of the line.
func Tokenize(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '#' && !inWord:
			return words, nil
		case c == '\'':
			end := strings.IndexByte(line[i+1:], '\'')
			if end < 0 {
				return nil, &SpecError{Index: -1, Msg: "unterminated ' quote"}
			}
			cur.WriteString(line[i+1 : i+1+end])
			i += end + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' && i+1 < len(line) && (line[i+1] == '"' || line[i+1] == '\\') {
					i++
				}
				cur.WriteByte(line[i])
			}
			if i >= len(line) {
				return nil, &SpecError{Index: -1, Msg: `unterminated " quote`}
			}
			inWord = true
		case c == '\\':
			if i+1 < len(line) {
				i++
				cur.WriteByte(line[i])
			}
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// wordReader walks a word list and builds SpecErrors that point at words.
type wordReader struct {
	words []string
	i     int // next word
}

func (r *wordReader) more() bool { return r.i < len(r.words) }

// next returns the next word; what says what was expected, for the error
// when the list ends.
func (r *wordReader) next(what string) (string, error) {
	if r.i >= len(r.words) {
		prev := "the spec"
		if r.i > 0 {
			prev = redact(r.words[r.i-1])
		}
		return "", &SpecError{Index: -1, Msg: fmt.Sprintf("%s needs %s after it", prev, what)}
	}
	r.i++
	return r.words[r.i-1], nil
}

func (r *wordReader) peek() string {
	if r.i < len(r.words) {
		return r.words[r.i]
	}
	return ""
}

// errAt makes an error about the word just read.
func (r *wordReader) errAt(format string, args ...any) error {
	i := r.i - 1
	if i < 0 {
		return &SpecError{Index: -1, Msg: fmt.Sprintf(format, args...)}
	}
	return &SpecError{Index: i, Word: redact(r.words[i]), Msg: fmt.Sprintf(format, args...)}
}

func (r *wordReader) uint(what string, bits int) (uint64, error) {
	w, err := r.next(what + " (a number)")
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(w, 0, bits)
	if err != nil {
		return 0, r.errAt("%s must be a number of at most %d bits (decimal or 0x hex)", what, bits)
	}
	return v, nil
}

func (r *wordReader) addr(what string) (netip.Addr, error) {
	w, err := r.next(what)
	if err != nil {
		return netip.Addr{}, err
	}
	a, err := netip.ParseAddr(w)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, r.errAt("%s must be an IPv4 or IPv6 address (e.g. 192.0.2.1 or 2001:db8::1)", what)
	}
	return a.Unmap(), nil
}

// prefix reads ADDR[/PLEN]; a bare address is a host prefix.
func (r *wordReader) prefix(what string) (netip.Prefix, error) {
	w, err := r.next(what)
	if err != nil {
		return netip.Prefix{}, err
	}
	var p netip.Prefix
	if strings.Contains(w, "/") {
		p, err = netip.ParsePrefix(w)
	} else {
		var a netip.Addr
		a, err = netip.ParseAddr(w)
		if err == nil {
			p = netip.PrefixFrom(a, a.BitLen())
		}
	}
	if err != nil || p.Addr().Zone() != "" {
		return netip.Prefix{}, r.errAt("%s must be an address or prefix (e.g. 192.0.2.0/24 or 2001:db8::/32)", what)
	}
	if p.Addr().Is4In6() {
		p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
	}
	return p.Masked(), nil
}

// key reads an iproute2 key: 0x followed by an even number of hex digits,
// or any other string taken byte for byte. Errors never echo the key.
func (r *wordReader) key(what string) ([]byte, error) {
	w, err := r.next(what)
	if err != nil {
		return nil, err
	}
	if len(w) > 2 && (strings.HasPrefix(w, "0x") || strings.HasPrefix(w, "0X")) {
		k, err := hex.DecodeString(w[2:])
		if err != nil {
			return nil, &SpecError{Index: r.i - 1, Word: "<key>", Msg: fmt.Sprintf("%s starts with 0x but is not an even number of hex digits", what)}
		}
		return k, nil
	}
	return []byte(w), nil
}

// protoNames maps the upper-layer protocol names specs accept to IP
// protocol numbers.
var protoNames = map[string]uint8{
	"any": 0, "icmp": 1, "igmp": 2, "ipip": 4, "tcp": 6, "udp": 17, "ipv6": 41,
	"gre": 47, "esp": 50, "ah": 51, "icmpv6": 58, "ipv6-icmp": 58,
	"mobility-header": 135, "sctp": 132, "dccp": 33, "udplite": 136,
}

// protoName returns the canonical name of an IP protocol number, or the
// number itself.
func protoName(p uint8) string {
	switch p {
	case 0:
		return "any"
	case 1:
		return "icmp"
	case 2:
		return "igmp"
	case 4:
		return "ipip"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 33:
		return "dccp"
	case 41:
		return "ipv6"
	case 47:
		return "gre"
	case 50:
		return "esp"
	case 51:
		return "ah"
	case 58:
		return "ipv6-icmp"
	case 132:
		return "sctp"
	case 135:
		return "mobility-header"
	case 136:
		return "udplite"
	}
	return strconv.Itoa(int(p))
}

func (r *wordReader) proto(what string) (uint8, error) {
	w, err := r.next(what)
	if err != nil {
		return 0, err
	}
	if p, ok := protoNames[w]; ok {
		return p, nil
	}
	v, err := strconv.ParseUint(w, 0, 8)
	if err != nil {
		return 0, r.errAt("%s must be a protocol name (tcp, udp, sctp, dccp, icmp, ipv6-icmp, gre, ...) or a number 0-255", what)
	}
	return uint8(v), nil
}

func hexKey(k []byte) string {
	if len(k) == 0 {
		return `""`
	}
	return "0x" + hex.EncodeToString(k)
}

func hex32(v uint32) string { return fmt.Sprintf("0x%08x", v) }
