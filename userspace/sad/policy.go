package sad

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

// Selector says which packets a policy (or an SA's `sel`) applies to, as
// the kernel's struct xfrm_selector: source and destination prefixes, an
// upper-layer protocol and ports. For ICMP and ICMPv6 the "ports" are the
// type (SrcPort) and code (DstPort), as in the kernel; for mobility-header
// the type is SrcPort. The zero Selector matches everything.
type Selector struct {
	// Src and Dst are the prefixes; an invalid (zero) prefix matches any
	// address of either family.
	Src, Dst netip.Prefix
	// Proto is the IP protocol number, 0 for any.
	Proto uint8
	// SrcPort and DstPort match when (port & mask) == value; a zero mask
	// matches any port.
	SrcPort, SrcPortMask uint16
	DstPort, DstPortMask uint16
	// Dev is the interface name (`dev DEV`), kept for the engine; "" for
	// any.
	Dev string
}

// Match reports whether a packet from src to dst carrying proto with
// ports sport, dport (type and code for ICMP) is selected. It does not
// look at Dev.
func (s *Selector) Match(src, dst netip.Addr, proto uint8, sport, dport uint16) bool {
	return (!s.Src.IsValid() || s.Src.Contains(src)) &&
		(!s.Dst.IsValid() || s.Dst.Contains(dst)) &&
		(s.Proto == 0 || s.Proto == proto) &&
		sport&s.SrcPortMask == s.SrcPort && dport&s.DstPortMask == s.DstPort
}

// Family returns 4 or 6 when the selector's prefixes fix the address
// family, 0 when it matches both.
func (s *Selector) Family() int {
	for _, p := range []netip.Prefix{s.Src, s.Dst} {
		if p.IsValid() {
			if p.Addr().Is4() {
				return 4
			}
			return 6
		}
	}
	return 0
}

// portProtos are the protocols whose selectors take sport/dport; the
// ICMPs and mobility-header take type/code instead.
func portProto(p uint8) bool { return p == 6 || p == 17 || p == 132 || p == 33 || p == 136 }
func typeProto(p uint8) bool { return p == 1 || p == 58 || p == 135 }

// parseWord handles one selector word w (already read). It reports false
// for a word that is not a selector word, or one already given (so that a
// selector inside an SA spec ends there).
func (s *Selector) parseWord(r *wordReader, w string, seen map[string]bool) (bool, error) {
	switch w {
	case "src", "dst", "proto", "sport", "dport", "type", "code", "dev":
	default:
		return false, nil
	}
	if seen[w] {
		return false, nil
	}
	seen[w] = true
	var err error
	switch w {
	case "src":
		s.Src, err = r.prefix("src")
	case "dst":
		s.Dst, err = r.prefix("dst")
	case "proto":
		s.Proto, err = r.proto("proto")
	case "sport", "dport", "type", "code":
		bits := 16
		if w == "type" || w == "code" {
			bits = 8
		}
		var v uint64
		if v, err = r.uint(w, bits); err != nil {
			return true, err
		}
		switch {
		case (w == "sport" || w == "dport") && !portProto(s.Proto):
			return true, r.errAt("%s needs proto tcp, udp, sctp, dccp or udplite before it", w)
		case (w == "type" || w == "code") && !typeProto(s.Proto):
			return true, r.errAt("%s needs proto icmp, ipv6-icmp or mobility-header before it", w)
		case w == "code" && s.Proto == 135:
			return true, r.errAt("mobility-header takes type only")
		}
		if w == "sport" || w == "type" {
			s.SrcPort, s.SrcPortMask = uint16(v), 0xffff
		} else {
			s.DstPort, s.DstPortMask = uint16(v), 0xffff
		}
	case "dev":
		s.Dev, err = r.next("an interface name")
		if err == nil && (s.Dev == "" || len(s.Dev) > 15 || strings.ContainsAny(s.Dev, "/ \t")) {
			err = r.errAt("dev must be an interface name (1-15 characters, no / or blanks)")
		}
	}
	return true, err
}

// parseSelector reads the selector words that follow `sel` in an SA spec,
// up to the first word that is not one of them.
func parseSelector(r *wordReader) (Selector, error) {
	var s Selector
	seen := map[string]bool{}
	n := 0
	for r.more() {
		mark := r.i
		w, _ := r.next("")
		ok, err := s.parseWord(r, w, seen)
		if err != nil {
			return s, err
		}
		if !ok {
			r.i = mark
			break
		}
		n++
	}
	if n == 0 {
		return s, whole("sel needs selector words after it (src PREFIX dst PREFIX [proto P [sport N] [dport N]])")
	}
	return s, s.check()
}

func (s *Selector) check() error {
	if s.Src.IsValid() && s.Dst.IsValid() && s.Src.Addr().Is4() != s.Dst.Addr().Is4() {
		return whole("selector src %s and dst %s are of different address families", s.Src, s.Dst)
	}
	return nil
}

func (s *Selector) words() []string {
	var w []string
	if s.Src.IsValid() {
		w = append(w, "src", s.Src.String())
	}
	if s.Dst.IsValid() {
		w = append(w, "dst", s.Dst.String())
	}
	if s.Proto != 0 {
		w = append(w, "proto", protoName(s.Proto))
		sw, dw := "sport", "dport"
		if typeProto(s.Proto) {
			sw, dw = "type", "code"
		}
		if s.SrcPortMask != 0 {
			w = append(w, sw, strconv.Itoa(int(s.SrcPort)))
		}
		if s.DstPortMask != 0 {
			w = append(w, dw, strconv.Itoa(int(s.DstPort)))
		}
	}
	if s.Dev != "" {
		w = append(w, "dev", s.Dev)
	}
	return w
}

// String renders the selector as its spec words.
func (s Selector) String() string { return strings.Join(s.words(), " ") }

// Dir is the direction a policy applies to.
type Dir uint8

const (
	// DirIn applies to packets delivered to this host.
	DirIn Dir = iota + 1
	// DirOut applies to packets this host sends.
	DirOut
	// DirFwd applies to packets this host forwards (gateway mode).
	DirFwd
)

func (d Dir) String() string {
	switch d {
	case DirIn:
		return "in"
	case DirOut:
		return "out"
	case DirFwd:
		return "fwd"
	}
	return "dir(" + strconv.Itoa(int(d)) + ")"
}

// Action is what RFC 4301 §4.4.1 says a policy does with the traffic it
// selects.
type Action uint8

const (
	// ActionProtect: the traffic goes through the policy's templates (SAs);
	// `action allow` with at least one tmpl.
	ActionProtect Action = iota + 1
	// ActionBypass: the traffic passes in the clear; `action allow` (the
	// default) without tmpl.
	ActionBypass
	// ActionDiscard: the traffic is dropped and counted; `action block`.
	ActionDiscard
)

func (a Action) String() string {
	switch a {
	case ActionProtect:
		return "protect"
	case ActionBypass:
		return "bypass"
	case ActionDiscard:
		return "discard"
	}
	return "action(" + strconv.Itoa(int(a)) + ")"
}

// Level says whether a template's SA is required or used when present
// (`level required|use`).
type Level uint8

const (
	// LevelRequired: traffic without the SA is not sent / not accepted.
	LevelRequired Level = iota
	// LevelUse: the SA is used when it exists (optional protection).
	LevelUse
)

func (l Level) String() string {
	if l == LevelUse {
		return "use"
	}
	return "required"
}

// Template names the SA a PROTECT policy applies (`tmpl ...`). Zero
// fields are wildcards: an unset Src/Dst (allowed in transport mode) takes
// the packet's addresses, SPI 0 and ReqID 0 match any SA.
type Template struct {
	Src, Dst netip.Addr
	Proto    ipsec.Proto
	SPI      uint32
	Mode     ipsec.Mode
	ReqID    uint32
	Level    Level
}

// PolicySpec is one policy as `ip xfrm policy add` describes it.
type PolicySpec struct {
	Sel Selector
	Dir Dir
	// Action is derived from `action allow|block` and the templates.
	Action   Action
	Priority uint32
	// Templates apply in order (an AH+ESP bundle has two).
	Templates []Template
	IfID      uint32
	Mark      *Mark
	// Index is `index N` (the kernel's policy index), kept only.
	Index uint32
}

var policyWords = []string{"src", "dst", "proto", "sport", "dport", "type", "code", "dev", "dir", "action",
	"priority", "index", "if_id", "mark", "ptype", "flag", "tmpl"}

var tmplWords = []string{"src", "dst", "proto", "spi", "mode", "reqid", "level"}

// ParsePolicy parses a policy in `ip xfrm policy add` syntax:
//
//	src PREFIX dst PREFIX [proto P [sport N] [dport N] | [type N] [code N]] [dev DEV]
//	dir in|out|fwd [action allow|block] [priority N] [index N] [if_id N] [mark M [mask M]]
//	[tmpl src A dst B proto esp|ah [spi N] mode transport|tunnel [reqid N] [level required|use]]...
//
// A leading `ip xfrm policy add|update` is skipped. `action allow` (the
// default) with templates is PROTECT, without is BYPASS; `action block`
// is DISCARD and takes no templates. Errors wrap ErrSyntax.
func ParsePolicy(words []string) (*PolicySpec, error) {
	skipped := len(words)
	words = skipCommand(words, "policy", "add", "update")
	skipped -= len(words)
	p, err := parsePolicyWords(words)
	if err != nil {
		if se, ok := err.(*SpecError); ok && se.Index >= 0 {
			se.Index += skipped
		}
		return nil, err
	}
	return p, nil
}

func parsePolicyWords(words []string) (*PolicySpec, error) {
	p := &PolicySpec{}
	r := &wordReader{words: words}
	seen := map[string]bool{}
	selSeen := map[string]bool{}
	block := false
	for r.more() {
		w, _ := r.next("")
		if ok, err := p.Sel.parseWord(r, w, selSeen); err != nil {
			return nil, err
		} else if ok {
			continue
		}
		if w != "tmpl" {
			if seen[w] || selSeen[w] {
				return nil, r.errAt("%s given twice", w)
			}
			seen[w] = true
		}
		var err error
		switch w {
		case "dir":
			var d string
			if d, err = r.next("in, out or fwd"); err == nil {
				switch d {
				case "in":
					p.Dir = DirIn
				case "out":
					p.Dir = DirOut
				case "fwd":
					p.Dir = DirFwd
				default:
					err = r.errAt("dir must be in, out or fwd")
				}
			}
		case "action":
			var a string
			if a, err = r.next("allow or block"); err == nil {
				switch a {
				case "allow":
				case "block":
					block = true
				default:
					err = r.errAt("action must be allow or block")
				}
			}
		case "priority":
			var v uint64
			v, err = r.uint("priority", 32)
			p.Priority = uint32(v)
		case "index":
			var v uint64
			v, err = r.uint("index", 32)
			p.Index = uint32(v)
		case "if_id":
			var v uint64
			v, err = r.uint("if_id", 32)
			p.IfID = uint32(v)
		case "mark":
			p.Mark, err = parseMark(r, "mark")
		case "ptype":
			var t string
			if t, err = r.next("main"); err == nil && t != "main" {
				err = r.errAt("ptype must be main (sub policies are not supported)")
			}
		case "flag":
			var f string
			if f, err = r.next("localok or icmp"); err == nil && f != "localok" && f != "icmp" {
				err = r.errAt("policy flag must be localok or icmp")
			}
		case "tmpl":
			var t Template
			t, err = parseTemplate(r)
			p.Templates = append(p.Templates, t)
		default:
			err = r.errAt("unknown word; a policy spec takes: %s", strings.Join(policyWords, ", "))
		}
		if err != nil {
			return nil, err
		}
	}
	if err := p.Sel.check(); err != nil {
		return nil, err
	}
	switch {
	case p.Dir == 0:
		return nil, whole("a policy needs dir in, out or fwd")
	case block && len(p.Templates) > 0:
		return nil, whole("action block discards the traffic: drop the tmpl, or use action allow to protect it")
	case block:
		p.Action = ActionDiscard
	case len(p.Templates) > 0:
		p.Action = ActionProtect
	default:
		p.Action = ActionBypass
	}
	fam := p.Sel.Family()
	for i, t := range p.Templates {
		if t.Src.IsValid() && fam != 0 && t.Mode == ipsec.ModeTransport && (fam == 4) != t.Src.Is4() {
			return nil, whole("tmpl %d: transport mode keeps the packet's addresses, so its family must match the selector's", i+1)
		}
	}
	return p, nil
}

func parseTemplate(r *wordReader) (Template, error) {
	t := Template{}
	seen := map[string]bool{}
	for r.more() {
		mark := r.i
		w, _ := r.next("")
		if !contains(tmplWords, w) || seen[w] {
			r.i = mark
			break
		}
		seen[w] = true
		var err error
		switch w {
		case "src":
			t.Src, err = r.addr("tmpl src")
		case "dst":
			t.Dst, err = r.addr("tmpl dst")
		case "proto":
			var p string
			if p, err = r.next("esp or ah"); err == nil {
				switch p {
				case "esp":
					t.Proto = ipsec.ProtoESP
				case "ah":
					t.Proto = ipsec.ProtoAH
				default:
					err = r.errAt("tmpl proto must be esp or ah")
				}
			}
		case "spi":
			var v uint64
			if v, err = r.uint("spi", 32); err == nil {
				t.SPI = uint32(v)
				if v != 0 && v < 256 {
					err = r.errAt("spi 1-255 are reserved by IANA (RFC 4303 §2.1); use 0x100 or above, or leave spi out to match any")
				}
			}
		case "mode":
			var m string
			if m, err = r.next("transport or tunnel"); err == nil {
				switch m {
				case "transport":
					t.Mode = ipsec.ModeTransport
				case "tunnel":
					t.Mode = ipsec.ModeTunnel
				default:
					err = r.errAt("tmpl mode must be transport or tunnel")
				}
			}
		case "reqid":
			var v uint64
			v, err = r.uint("reqid", 32)
			t.ReqID = uint32(v)
		case "level":
			var l string
			if l, err = r.next("required or use"); err == nil {
				switch l {
				case "required":
					t.Level = LevelRequired
				case "use":
					t.Level = LevelUse
				default:
					err = r.errAt("tmpl level must be required or use")
				}
			}
		}
		if err != nil {
			return t, err
		}
	}
	switch {
	case t.Proto == 0:
		return t, whole("tmpl needs proto esp or proto ah")
	case t.Mode == 0:
		t.Mode = ipsec.ModeTransport
	}
	switch {
	case t.Mode == ipsec.ModeTunnel && (!t.Src.IsValid() || !t.Dst.IsValid()):
		return t, whole("a tunnel-mode tmpl needs src ADDR and dst ADDR (the tunnel endpoints)")
	case t.Src.IsValid() != t.Dst.IsValid():
		return t, whole("tmpl needs both src and dst, or neither (transport mode)")
	case t.Src.IsValid() && t.Src.Is4() != t.Dst.Is4():
		return t, whole("tmpl src %s and dst %s are of different address families", t.Src, t.Dst)
	}
	return t, nil
}

func contains(list []string, w string) bool {
	for _, l := range list {
		if l == w {
			return true
		}
	}
	return false
}

func (t *Template) words() []string {
	w := []string{"tmpl"}
	if t.Src.IsValid() {
		w = append(w, "src", t.Src.String(), "dst", t.Dst.String())
	}
	w = append(w, "proto", t.Proto.String())
	if t.SPI != 0 {
		w = append(w, "spi", hex32(t.SPI))
	}
	w = append(w, "mode", t.Mode.String())
	if t.ReqID != 0 {
		w = append(w, "reqid", strconv.FormatUint(uint64(t.ReqID), 10))
	}
	return append(w, "level", t.Level.String())
}

// Words renders the policy as a word list ParsePolicy reads back to an
// equal policy. Policies hold no secrets.
func (p *PolicySpec) Words() []string {
	w := p.Sel.words()
	w = append(w, "dir", p.Dir.String())
	if p.Action == ActionDiscard {
		w = append(w, "action", "block")
	} else {
		w = append(w, "action", "allow")
	}
	w = append(w, "priority", strconv.FormatUint(uint64(p.Priority), 10))
	if p.Index != 0 {
		w = append(w, "index", strconv.FormatUint(uint64(p.Index), 10))
	}
	if p.IfID != 0 {
		w = append(w, "if_id", strconv.FormatUint(uint64(p.IfID), 10))
	}
	if p.Mark != nil {
		w = append(w, "mark", hex32(p.Mark.Value), "mask", hex32(p.Mark.Mask))
	}
	for i := range p.Templates {
		w = append(w, p.Templates[i].words()...)
	}
	return w
}

// String renders the policy in canonical `ip xfrm policy` form (Words
// joined by blanks). Action says what the RFC 4301 action is.
func (p *PolicySpec) String() string { return strings.Join(p.Words(), " ") }
