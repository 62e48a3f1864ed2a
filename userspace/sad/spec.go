package sad

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/xdpsec/xdpsec/userspace/ipsec"
	"github.com/xdpsec/xdpsec/userspace/replay"
)

// DefaultReplayWindow is the anti-replay window of an SA whose spec has
// no replay-window word. iproute2 leaves it at 0 (no replay protection);
// xdpsec follows RFC 4303 §3.4.3 ("a default of 64 SHOULD be used").
// Write replay-window 0 to turn replay protection off.
const DefaultReplayWindow = 64

// Encap is the UDP encapsulation of an ESP SA (`encap espinudp SPORT DPORT
// OADDR`, RFC 3948).
type Encap struct {
	// Type is "espinudp" (the only type xdpsec carries; espinudp-nonike
	// and espintcp are refused).
	Type             string
	SrcPort, DstPort uint16
	// OrigAddr is the original address for NAT-OA (unspecified, 0.0.0.0 or
	// ::, when not known). Kept, not used by the transforms.
	OrigAddr netip.Addr
}

// Limits are an SA's lifetimes as `limit` words give them. Bytes and
// packets are enforced by the SA itself (ipsec.Lifetime); the four time
// limits are checked by SAD.Tick. Zero means no limit.
type Limits struct {
	ipsec.Lifetime
	// TimeSoft and TimeHard count from when the SA was added.
	TimeSoft, TimeHard time.Duration
	// TimeUseSoft and TimeUseHard count from the SA's first packet.
	TimeUseSoft, TimeUseHard time.Duration
}

// Mark is a netfilter mark with its mask (`mark`, `output-mark`).
type Mark struct {
	Value, Mask uint32
}

// Offload is the `offload [crypto|packet] dev DEV dir in|out` clause,
// kept for the engine; xdpsec itself is the offload.
type Offload struct {
	Type string // "crypto" or "packet"
	Dev  string
	Dir  string // "in" or "out"
}

// SASpec is one SA as `ip xfrm state add` describes it. ParseSA returns
// only specs that pass every check; Params gives the transforms' view.
//
// An SASpec holds key bytes. String redacts them; SecretWords does not
// and exists only to write a config file back or to test round trips.
type SASpec struct {
	Src, Dst netip.Addr
	Proto    ipsec.Proto
	SPI      uint32
	// Mode defaults to transport, as in iproute2.
	Mode  ipsec.Mode
	ReqID uint32

	// AEAD excludes Enc and Auth. Auth comes from `auth` (Linux's default
	// truncation for the algorithm) or `auth-trunc`; ICVBits is always set.
	AEAD, Enc, Auth ipsec.AlgorithmKey

	// ESN is `flag esn`. Flags holds the other flags, in canonical order.
	ESN   bool
	Flags []string

	// ReplayWindow is in packets; DefaultReplayWindow when not given.
	ReplayWindow uint32
	// InSeq and OutSeq are the initial inbound and outbound sequence
	// numbers (replay-seq/replay-seq-hi, replay-oseq/replay-oseq-hi): the
	// next outbound packet carries OutSeq+1.
	InSeq, OutSeq uint64

	Limits Limits
	Encap  *Encap
	// Sel is the SA's selector (`sel ...`), kept for the engine; nil when
	// absent.
	Sel *Selector

	IfID       uint32
	Mark       *Mark
	OutputMark *Mark
	// Dir is "in", "out" or "" (`dir in|out`, Linux 6.10+).
	Dir     string
	Offload *Offload
	// TFCPad is `tfcpad LENGTH` (traffic flow confidentiality padding).
	// ParseSA refuses a non-zero value: the transforms do not pad, and a
	// spec must not promise what the datapath does not do.
	TFCPad uint32
	// Seq is `seq SEQ` (the netlink sequence of an acquire), kept only.
	Seq uint32
	// PCPU is `pcpu-num N` (RFC 9611 per-resource SA, XFRMA_SA_PCPU in
	// Linux 6.13+), nil when absent. Where Linux names a CPU, xdpsec names
	// an engine queue: only the worker of queue N sends on this SA, and
	// prefers it to SAs without pcpu-num (see SAD.LookupOutbound). It does
	// not restrict receiving. ParseSA allows 0 to MaxPCPU.
	PCPU *uint32
}

// MaxPCPU is the highest `pcpu-num`: the engine runs at most 256 queues
// (engine/tun.MaxQueues), numbered from 0.
const MaxPCPU = 255

// Key returns the SA's lookup key (SPI, destination, protocol).
func (s *SASpec) Key() SAKey { return SAKey{SPI: s.SPI, Dst: s.Dst, Proto: s.Proto} }

// saFlags are the state flags iproute2 knows. esn, noecn and
// dont-encap-dscp act (ipsec.SAParams); the others are accepted and have no
// effect (decap-dscp, nopmtudisc, wildrecv, icmp, af-unspec, align4).
// oseq-may-wrap is refused: it would let the sequence number wrap.
var saFlags = []string{"noecn", "decap-dscp", "nopmtudisc", "wildrecv", "icmp", "af-unspec", "align4", "esn", "dont-encap-dscp"}

// saWords is the vocabulary of ParseSA, for the unknown-word error.
var saWords = []string{"src", "dst", "proto", "spi", "mode", "reqid", "aead", "enc", "auth", "auth-trunc",
	"encap", "flag", "replay-window", "replay-seq", "replay-oseq", "replay-seq-hi", "replay-oseq-hi",
	"limit", "sel", "if_id", "mark", "output-mark", "dir", "offload", "tfcpad", "seq", "pcpu-num"}

// linuxDefaultTrunc is the ICV length in bits Linux uses for `auth NAME
// KEY` (net/xfrm/xfrm_algo.c), which the transforms may not allow
// (hmac(sha256) truncates to 96 bits there, RFC 4868 asks for 128).
var linuxDefaultTrunc = map[string]int{
	"hmac(md5)": 96, "hmac(sha1)": 96, "hmac(sha256)": 96, "hmac(sha384)": 192, "hmac(sha512)": 256,
}

// ParseSA parses an SA in `ip xfrm state add` syntax from words (a
// command line's arguments, or Tokenize's output for a config line). A
// leading `ip xfrm state add|update` (or `ip x s a`) is skipped. Every
// check the transforms make is made here, with errors (wrapping
// ErrSyntax) that name the word and what is allowed and never show key
// bytes.
func ParseSA(words []string) (*SASpec, error) {
	return parseSA(words, true)
}

// ParseSAForLookup is ParseSA for tools that need only an SA's identity
// (xdpsec classify): the algorithm words may be missing, and are still
// checked when present.
func ParseSAForLookup(words []string) (*SASpec, error) {
	return parseSA(words, false)
}

// skipCommand drops a leading `ip xfrm state add` and its abbreviations.
func skipCommand(words []string, object string, verbs ...string) []string {
	if len(words) >= 1 && words[0] == "ip" {
		words = words[1:]
		if len(words) >= 1 && strings.HasPrefix("xfrm", words[0]) && words[0] != "" {
			words = words[1:]
		}
		if len(words) >= 1 && strings.HasPrefix(object, words[0]) && words[0] != "" {
			words = words[1:]
		}
		if len(words) >= 1 && words[0] != "" {
			for _, v := range verbs {
				if strings.HasPrefix(v, words[0]) {
					return words[1:]
				}
			}
		}
	}
	return words
}

func parseSA(words []string, needAlgorithms bool) (*SASpec, error) {
	skipped := len(words)
	words = skipCommand(words, "state", "add", "update")
	skipped -= len(words)
	s, err := parseSAWords(words, needAlgorithms)
	if err != nil {
		if se, ok := err.(*SpecError); ok && se.Index >= 0 {
			se.Index += skipped
		}
		return nil, err
	}
	return s, nil
}

func parseSAWords(words []string, needAlgorithms bool) (*SASpec, error) {
	s := &SASpec{ReplayWindow: DefaultReplayWindow}
	r := &wordReader{words: words}
	seen := map[string]bool{}
	var (
		seqLo, seqHi, oseqLo, oseqHi uint64
	)
	once := func(w string) error {
		if seen[w] {
			return r.errAt("%s given twice", w)
		}
		seen[w] = true
		return nil
	}
	for r.more() {
		w, _ := r.next("")
		var err error
		switch w {
		case "src", "dst", "proto", "spi", "mode", "reqid", "replay-window", "replay-seq", "replay-oseq",
			"replay-seq-hi", "replay-oseq-hi", "encap", "if_id", "mark", "output-mark", "dir", "offload",
			"tfcpad", "seq", "sel", "aead", "enc", "auth", "auth-trunc", "pcpu-num":
			if w == "auth" || w == "auth-trunc" {
				if err := once("auth/auth-trunc"); err != nil {
					return nil, err
				}
			} else if err := once(w); err != nil {
				return nil, err
			}
		}
		switch w {
		case "src":
			s.Src, err = r.addr("src")
		case "dst":
			s.Dst, err = r.addr("dst")
		case "proto":
			var p string
			if p, err = r.next("esp or ah"); err == nil {
				switch p {
				case "esp":
					s.Proto = ipsec.ProtoESP
				case "ah":
					s.Proto = ipsec.ProtoAH
				case "comp", "route2", "hao":
					err = r.errAt("proto %s is not supported: xdpsec carries esp and ah", p)
				default:
					err = r.errAt("proto must be esp or ah")
				}
			}
		case "spi":
			var v uint64
			if v, err = r.uint("spi", 32); err == nil {
				s.SPI = uint32(v)
				switch {
				case v == 0:
					err = r.errAt("spi 0 is reserved for local use and never sent (RFC 4303 §2.1); use 0x100 or above")
				case v < 256:
					err = r.errAt("spi 1-255 are reserved by IANA (RFC 4303 §2.1); use 0x100 or above")
				}
			}
		case "mode":
			var m string
			if m, err = r.next("transport or tunnel"); err == nil {
				switch m {
				case "transport":
					s.Mode = ipsec.ModeTransport
				case "tunnel":
					s.Mode = ipsec.ModeTunnel
				case "beet", "ro", "in_trigger":
					err = r.errAt("mode %s is not supported: use transport or tunnel", m)
				default:
					err = r.errAt("mode must be transport or tunnel")
				}
			}
		case "reqid":
			var v uint64
			v, err = r.uint("reqid", 32)
			s.ReqID = uint32(v)
		case "aead":
			s.AEAD, err = parseAlgo(r, ipsec.KindAEAD, true)
		case "enc":
			s.Enc, err = parseAlgo(r, ipsec.KindCipher, false)
		case "auth":
			s.Auth, err = parseAlgo(r, ipsec.KindIntegrity, false)
			if err == nil {
				s.Auth.ICVBits = linuxDefaultTrunc[s.Auth.Name]
				a, _ := ipsec.LookupAlgorithm(ipsec.KindIntegrity, s.Auth.Name)
				if a.CheckICV(s.Auth.ICVBits) != nil {
					err = r.errAt("auth %s means %d-bit truncation in Linux, which %s does not allow; write auth-trunc '%s' KEY %d",
						s.Auth.Name, s.Auth.ICVBits, a.RFC, s.Auth.Name, a.ICVSizes[0]*8)
				}
			}
		case "auth-trunc":
			s.Auth, err = parseAlgo(r, ipsec.KindIntegrity, true)
		case "comp":
			err = r.errAt("IPComp (comp) is not supported")
		case "flag":
			err = parseFlags(r, s)
		case "replay-window":
			var v uint64
			if v, err = r.uint("replay-window", 32); err == nil {
				s.ReplayWindow = uint32(v)
				if v > replay.MaxSize {
					err = r.errAt("replay-window %d is too large: at most %d packets", v, replay.MaxSize)
				}
			}
		case "replay-seq":
			seqLo, err = r.uint("replay-seq", 32)
		case "replay-oseq":
			oseqLo, err = r.uint("replay-oseq", 32)
		case "replay-seq-hi":
			seqHi, err = r.uint("replay-seq-hi", 32)
		case "replay-oseq-hi":
			oseqHi, err = r.uint("replay-oseq-hi", 32)
		case "limit":
			err = parseLimit(r, &s.Limits)
		case "encap":
			s.Encap, err = parseEncap(r)
		case "sel":
			var sel Selector
			sel, err = parseSelector(r)
			s.Sel = &sel
		case "if_id":
			var v uint64
			v, err = r.uint("if_id", 32)
			s.IfID = uint32(v)
		case "mark":
			s.Mark, err = parseMark(r, "mark")
		case "output-mark":
			s.OutputMark, err = parseMark(r, "output-mark")
		case "dir":
			if s.Dir, err = r.next("in or out"); err == nil && s.Dir != "in" && s.Dir != "out" {
				err = r.errAt("dir must be in or out")
			}
		case "offload":
			s.Offload, err = parseOffload(r)
		case "tfcpad":
			var v uint64
			v, err = r.uint("tfcpad", 32)
			s.TFCPad = uint32(v)
		case "seq":
			var v uint64
			v, err = r.uint("seq", 32)
			s.Seq = uint32(v)
		case "pcpu-num":
			var v uint64
			if v, err = r.uint("pcpu-num", 32); err == nil {
				if v > MaxPCPU {
					err = r.errAt("pcpu-num %d is out of range: it names the engine queue (0-%d) whose worker sends on this SA", v, MaxPCPU)
				} else {
					n := uint32(v)
					s.PCPU = &n
				}
			}
		default:
			err = r.errAt("unknown word; an SA spec takes: %s", strings.Join(saWords, ", "))
		}
		if err != nil {
			return nil, err
		}
	}
	s.InSeq = seqHi<<32 | seqLo
	s.OutSeq = oseqHi<<32 | oseqLo
	if s.Mode == 0 {
		s.Mode = ipsec.ModeTransport
	}
	if err := s.validate(needAlgorithms); err != nil {
		return nil, err
	}
	return s, nil
}

func whole(format string, args ...any) error {
	return &SpecError{Index: -1, Msg: fmt.Sprintf(format, args...)}
}

// validate makes the checks that involve several words.
func (s *SASpec) validate(needAlgorithms bool) error {
	switch {
	case !s.Src.IsValid() || !s.Dst.IsValid():
		return whole("an SA needs src ADDR and dst ADDR")
	case s.Proto == 0:
		return whole("an SA needs proto esp or proto ah")
	case s.SPI == 0:
		return whole("an SA needs spi N (0x100 or above)")
	case s.Src.Is4() != s.Dst.Is4():
		return whole("src %s and dst %s are of different address families", s.Src, s.Dst)
	}
	hasAEAD, hasEnc, hasAuth := s.AEAD.Name != "", s.Enc.Name != "", s.Auth.Name != ""
	switch {
	case s.Proto == ipsec.ProtoAH && (hasAEAD || hasEnc):
		return whole("proto ah takes auth or auth-trunc only, not aead or enc (AH does not encrypt)")
	case hasAEAD && (hasEnc || hasAuth):
		return whole("aead is a combined algorithm: give either aead, or enc with auth/auth-trunc, not both")
	case s.Encap != nil && s.Proto != ipsec.ProtoESP:
		return whole("encap espinudp applies to proto esp only (RFC 3948 does not encapsulate AH)")
	case !s.ESN && (s.InSeq > 0xffffffff || s.OutSeq > 0xffffffff):
		return whole("replay-seq-hi and replay-oseq-hi need flag esn")
	case s.TFCPad != 0:
		return whole("tfcpad: xdpsec does not add TFC padding (RFC 4303 §2.7) and would send packets unpadded; remove tfcpad")
	}
	if s.Limits.SoftPackets != 0 && s.Limits.HardPackets != 0 && s.Limits.SoftPackets > s.Limits.HardPackets ||
		s.Limits.SoftBytes != 0 && s.Limits.HardBytes != 0 && s.Limits.SoftBytes > s.Limits.HardBytes ||
		s.Limits.TimeSoft != 0 && s.Limits.TimeHard != 0 && s.Limits.TimeSoft > s.Limits.TimeHard ||
		s.Limits.TimeUseSoft != 0 && s.Limits.TimeUseHard != 0 && s.Limits.TimeUseSoft > s.Limits.TimeUseHard {
		return whole("a soft limit is above its hard limit: the soft limit must come first")
	}
	if !needAlgorithms {
		return nil
	}
	switch {
	case s.Proto == ipsec.ProtoESP && !hasAEAD && !hasEnc:
		return whole("proto esp needs aead NAME KEY ICVBITS, or enc NAME KEY (with auth-trunc NAME KEY BITS); aead: %s; enc: %s",
			strings.Join(ipsec.AlgorithmNames(ipsec.KindAEAD), ", "), strings.Join(ipsec.AlgorithmNames(ipsec.KindCipher), ", "))
	case s.Proto == ipsec.ProtoESP && s.Enc.Name == "ecb(cipher_null)" && !hasAuth:
		return whole("enc ecb(cipher_null) without auth-trunc would protect nothing; add auth-trunc NAME KEY BITS (%s)",
			strings.Join(ipsec.AlgorithmNames(ipsec.KindIntegrity), ", "))
	case s.Proto == ipsec.ProtoESP && hasEnc && !hasAuth:
		return whole("enc %s without auth-trunc is encryption without integrity, which an active attacker can alter and, with CBC, decrypt; add auth-trunc NAME KEY BITS (%s) or use aead",
			s.Enc.Name, strings.Join(ipsec.AlgorithmNames(ipsec.KindIntegrity), ", "))
	case s.Proto == ipsec.ProtoAH && !hasAuth:
		return whole("proto ah needs auth-trunc NAME KEY BITS (%s)", strings.Join(ipsec.AlgorithmNames(ipsec.KindIntegrity), ", "))
	}
	return nil
}

// parseAlgo reads NAME KEY [BITS] and checks them against the table.
func parseAlgo(r *wordReader, kind ipsec.Kind, withBits bool) (ipsec.AlgorithmKey, error) {
	var ak ipsec.AlgorithmKey
	name, err := r.next("an algorithm name")
	if err != nil {
		return ak, err
	}
	a, err := ipsec.LookupAlgorithm(kind, name)
	if err != nil {
		return ak, r.errAt("%v", err)
	}
	ak.Name = a.Name
	if ak.Key, err = r.key("a key (0x hex or a string)"); err != nil {
		return ak, err
	}
	if err := a.CheckKey(ak.Key); err != nil {
		return ak, &SpecError{Index: r.i - 1, Word: fmt.Sprintf("<key %d bits>", len(ak.Key)*8), Msg: err.Error()}
	}
	if withBits {
		v, err := r.uint("the ICV length in bits", 16)
		if err != nil {
			return ak, err
		}
		ak.ICVBits = int(v)
		if err := a.CheckICV(ak.ICVBits); err != nil {
			return ak, r.errAt("%v", err)
		}
	}
	return ak, nil
}

func parseFlags(r *wordReader, s *SASpec) error {
	n := 0
	for r.more() && (slices.Contains(saFlags, r.peek()) || r.peek() == "oseq-may-wrap") {
		f, _ := r.next("")
		n++
		switch {
		case f == "oseq-may-wrap":
			return r.errAt("flag oseq-may-wrap is refused: xdpsec never lets a sequence number wrap (RFC 4303 §3.3.3); rekey instead")
		case f == "esn":
			s.ESN = true
		case !slices.Contains(s.Flags, f):
			s.Flags = append(s.Flags, f)
		}
	}
	if n == 0 {
		if r.more() {
			r.next("")
			return r.errAt("unknown flag; flags are: %s", strings.Join(saFlags, ", "))
		}
		return whole("flag needs a flag name after it (%s)", strings.Join(saFlags, ", "))
	}
	slices.SortFunc(s.Flags, func(a, b string) int { return slices.Index(saFlags, a) - slices.Index(saFlags, b) })
	return nil
}

var limitWords = []string{"time-soft", "time-hard", "time-use-soft", "time-use-hard", "byte-soft", "byte-hard", "packet-soft", "packet-hard"}

// parseLimit reads one or more LIMIT pairs after `limit`, as iproute2.
func parseLimit(r *wordReader, l *Limits) error {
	n := 0
	for r.more() && slices.Contains(limitWords, r.peek()) {
		w, _ := r.next("")
		v, err := r.uint(w, 64)
		if err != nil {
			return err
		}
		if strings.HasPrefix(w, "time") && v > uint64(1<<63-1)/uint64(time.Second) {
			return r.errAt("%s is too large (seconds)", w)
		}
		d := time.Duration(v) * time.Second
		switch w {
		case "time-soft":
			l.TimeSoft = d
		case "time-hard":
			l.TimeHard = d
		case "time-use-soft":
			l.TimeUseSoft = d
		case "time-use-hard":
			l.TimeUseHard = d
		case "byte-soft":
			l.SoftBytes = v
		case "byte-hard":
			l.HardBytes = v
		case "packet-soft":
			l.SoftPackets = v
		case "packet-hard":
			l.HardPackets = v
		}
		n++
	}
	if n == 0 {
		if r.more() {
			r.next("")
			return r.errAt("unknown limit; limits are: %s (time in seconds)", strings.Join(limitWords, ", "))
		}
		return whole("limit needs one of %s and a number", strings.Join(limitWords, ", "))
	}
	return nil
}

func parseEncap(r *wordReader) (*Encap, error) {
	t, err := r.next("espinudp")
	if err != nil {
		return nil, err
	}
	switch t {
	case "espinudp":
	case "espinudp-nonike", "espintcp":
		return nil, r.errAt("encap %s is not supported: use espinudp (RFC 3948)", t)
	default:
		return nil, r.errAt("encap type must be espinudp")
	}
	e := &Encap{Type: t}
	sp, err := r.uint("the UDP source port", 16)
	if err != nil {
		return nil, err
	}
	if sp == 0 {
		return nil, r.errAt("encap source port must not be 0 (4500 is usual)")
	}
	dp, err := r.uint("the UDP destination port", 16)
	if err != nil {
		return nil, err
	}
	if dp == 0 {
		return nil, r.errAt("encap destination port must not be 0 (4500 is usual)")
	}
	e.SrcPort, e.DstPort = uint16(sp), uint16(dp)
	if e.OrigAddr, err = r.addr("the original address (OADDR, 0.0.0.0 when unknown)"); err != nil {
		return nil, err
	}
	return e, nil
}

func parseMark(r *wordReader, what string) (*Mark, error) {
	v, err := r.uint("a "+what+" value", 32)
	if err != nil {
		return nil, err
	}
	m := &Mark{Value: uint32(v), Mask: 0xffffffff}
	if r.peek() == "mask" {
		r.next("")
		mv, err := r.uint(what+" mask", 32)
		if err != nil {
			return nil, err
		}
		m.Mask = uint32(mv)
	}
	return m, nil
}

func parseOffload(r *wordReader) (*Offload, error) {
	o := &Offload{Type: "crypto"}
	if p := r.peek(); p == "crypto" || p == "packet" {
		o.Type, _ = r.next("")
	}
	for _, want := range []string{"dev", "dir"} {
		w, err := r.next(want)
		if err != nil {
			return nil, err
		}
		if w != want {
			return nil, r.errAt("offload takes [crypto|packet] dev DEV dir in|out")
		}
		v, err := r.next(want + " value")
		if err != nil {
			return nil, err
		}
		if want == "dev" {
			o.Dev = v
		} else if v != "in" && v != "out" {
			return nil, r.errAt("offload dir must be in or out")
		} else {
			o.Dir = v
		}
	}
	return o, nil
}

// Params returns the transforms' view of the spec, for ipsec.NewSA. The
// key slices alias the spec's.
func (s *SASpec) Params() ipsec.SAParams {
	p := ipsec.SAParams{
		Proto: s.Proto, Mode: s.Mode, SPI: s.SPI, Src: s.Src, Dst: s.Dst,
		AEAD: s.AEAD, Enc: s.Enc, Auth: s.Auth,
		ESN: s.ESN, ReplayWindow: s.ReplayWindow, NoECN: slices.Contains(s.Flags, "noecn"),
		NoEncapDSCP: slices.Contains(s.Flags, "dont-encap-dscp"),
		OutSeq:      s.OutSeq, InSeq: s.InSeq,
		Lifetime: s.Limits.Lifetime,
	}
	if s.Encap != nil {
		p.EncapSrcPort, p.EncapDstPort = s.Encap.SrcPort, s.Encap.DstPort
	}
	return p
}

// String renders the spec in canonical `ip xfrm state` form with every
// key replaced by <key N bits>. It is safe to log.
func (s *SASpec) String() string { return strings.Join(s.words(false), " ") }

// Format prints String for every verb (%v, %+v, %#v, %d, %x...), so that
// no verb prints the key bytes field by field.
func (s *SASpec) Format(f fmt.State, _ rune) { io.WriteString(f, s.String()) }

// MarshalJSON renders the spec as its String, keys redacted.
func (s *SASpec) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// SecretWords renders the spec as a word list ParseSA reads back to an
// equal spec, keys included as 0x hex. It exists to write specs back to a
// protected config file; never log it.
func (s *SASpec) SecretWords() []string { return s.words(true) }

func (s *SASpec) words(secret bool) []string {
	key := func(k []byte) string {
		if secret {
			if len(k) == 0 {
				return ""
			}
			return hexKey(k)
		}
		return fmt.Sprintf("<key %d bits>", len(k)*8)
	}
	w := []string{"src", s.Src.String(), "dst", s.Dst.String(), "proto", s.Proto.String(), "spi", hex32(s.SPI)}
	if s.ReqID != 0 {
		w = append(w, "reqid", strconv.FormatUint(uint64(s.ReqID), 10))
	}
	w = append(w, "mode", s.Mode.String(), "replay-window", strconv.FormatUint(uint64(s.ReplayWindow), 10))
	if v := uint32(s.InSeq); v != 0 {
		w = append(w, "replay-seq", hex32(v))
	}
	if v := uint32(s.InSeq >> 32); v != 0 {
		w = append(w, "replay-seq-hi", hex32(v))
	}
	if v := uint32(s.OutSeq); v != 0 {
		w = append(w, "replay-oseq", hex32(v))
	}
	if v := uint32(s.OutSeq >> 32); v != 0 {
		w = append(w, "replay-oseq-hi", hex32(v))
	}
	if s.ESN || len(s.Flags) > 0 {
		w = append(w, "flag")
		w = append(w, s.Flags...)
		if s.ESN {
			w = append(w, "esn")
		}
	}
	if s.AEAD.Name != "" {
		w = append(w, "aead", s.AEAD.Name, key(s.AEAD.Key), strconv.Itoa(s.AEAD.ICVBits))
	}
	if s.Enc.Name != "" {
		w = append(w, "enc", s.Enc.Name, key(s.Enc.Key))
	}
	if s.Auth.Name != "" {
		w = append(w, "auth-trunc", s.Auth.Name, key(s.Auth.Key), strconv.Itoa(s.Auth.ICVBits))
	}
	if e := s.Encap; e != nil {
		w = append(w, "encap", e.Type, strconv.Itoa(int(e.SrcPort)), strconv.Itoa(int(e.DstPort)), e.OrigAddr.String())
	}
	l := s.Limits
	for _, lv := range []struct {
		name string
		v    uint64
	}{
		{"time-soft", uint64(l.TimeSoft / time.Second)}, {"time-hard", uint64(l.TimeHard / time.Second)},
		{"time-use-soft", uint64(l.TimeUseSoft / time.Second)}, {"time-use-hard", uint64(l.TimeUseHard / time.Second)},
		{"byte-soft", l.SoftBytes}, {"byte-hard", l.HardBytes},
		{"packet-soft", l.SoftPackets}, {"packet-hard", l.HardPackets},
	} {
		if lv.v != 0 {
			w = append(w, "limit", lv.name, strconv.FormatUint(lv.v, 10))
		}
	}
	if s.Sel != nil {
		w = append(w, "sel")
		w = append(w, s.Sel.words()...)
	}
	if s.IfID != 0 {
		w = append(w, "if_id", strconv.FormatUint(uint64(s.IfID), 10))
	}
	if s.Mark != nil {
		w = append(w, "mark", hex32(s.Mark.Value), "mask", hex32(s.Mark.Mask))
	}
	if s.OutputMark != nil {
		w = append(w, "output-mark", hex32(s.OutputMark.Value), "mask", hex32(s.OutputMark.Mask))
	}
	if s.Dir != "" {
		w = append(w, "dir", s.Dir)
	}
	if o := s.Offload; o != nil {
		w = append(w, "offload", o.Type, "dev", o.Dev, "dir", o.Dir)
	}
	if s.TFCPad != 0 {
		w = append(w, "tfcpad", strconv.FormatUint(uint64(s.TFCPad), 10))
	}
	if s.Seq != 0 {
		w = append(w, "seq", strconv.FormatUint(uint64(s.Seq), 10))
	}
	if s.PCPU != nil {
		w = append(w, "pcpu-num", strconv.FormatUint(uint64(*s.PCPU), 10))
	}
	return w
}
