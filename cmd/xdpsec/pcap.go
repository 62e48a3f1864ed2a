package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/xdpsec/xdpsec/internal/pcap"
	"github.com/xdpsec/xdpsec/userspace/ipsec"
	"github.com/xdpsec/xdpsec/userspace/sad"
)

// pcap decrypt|encrypt: the offline tool of issue 3. It runs captured
// packets through the same transforms (userspace/ipsec) and SA parser
// (userspace/sad) as the engine, in file order, one replay window per SA,
// as a receiver (decrypt) or a sender (encrypt) would.

const pcapUsage = `Usage:
  xdpsec pcap decrypt (--sa-file FILE | --sa SPEC...) IN.pcap [-w OUT.pcap] [--json]
  xdpsec pcap encrypt (--sa-file FILE | --sa SPEC...) IN.pcap -w OUT.pcap [--seq N]

SPEC is one SA in 'ip xfrm state add' syntax, quoted as one argument:
  src A dst B proto esp|ah spi N mode transport|tunnel [reqid N]
  aead NAME KEY ICVBITS | enc NAME KEY [auth-trunc NAME KEY BITS]
  [encap espinudp SPORT DPORT 0.0.0.0] [flag esn] [replay-window N] ...
--sa-file FILE reads SAs one per line instead (SPEC alone or a whole 'ip
xfrm state add' line, # comments; a config's key file will do), from FILE
(which group and others must not be able to read: chmod 600 FILE) or from
stdin with '-'; they come after the --sa ones. A SPEC given with --sa puts
its keys where every local user can read them (ps, /proc/PID/cmdline; and it stays in shell history):
xdpsec then warns on stderr.

decrypt reads IN (pcap or pcapng, Ethernet, raw IP or Linux cooked) and
prints one line per packet: index, verdict, SPI, sequence number and the
SHA-256 of the inner payload as the next header sees it (the inner IP
packet in tunnel mode, the upper-layer segment in transport mode). Verdicts:
ok, dummy, no-state, bad-icv, bad-padding, bad-seq, replay, malformed,
fragment, ike, nat-keepalive, expired, not-ipsec. Packets are looked up by
(SPI, destination, protocol) and checked in file order through one replay
window per SA. With --json every line is an object
  {"index":N,"verdict":V,"spi":"0x..","seq":N,"inner_sha256":"..."}
(spi and seq when the packet had them, inner_sha256 only for ok). -w writes
the packets that decrypted ok: link header kept (EtherType fixed when the
inner family differs), the outer IP header replaced by the inner packet in
tunnel mode, ESP/AH removed in transport mode.

encrypt protects every IP packet of IN and writes the result to OUT, link
header kept. Which SA protects a packet: the first --sa, in command-line
order, that fits it. A transport-mode SA fits a packet whose source and
destination equal the SA's src and dst; a tunnel-mode SA fits any packet
(the SA's src and dst become the outer header; any inner family under any
outer family). Packets no SA fits, and non-IP frames, are reported and left
out. Sequence numbers start at 1 for every SA (or at replay-oseq+1 when the
spec has replay-oseq), or at N with --seq N (above 2^32-1 only with
flag esn: ESN packets carry the low 32 bits, the high bits go into the ICV).

Keys are never printed. Exit status: 0 when the file was processed (whatever
the verdicts), 1 on I/O errors, 2 on a bad command line or SA spec.

Examples:
  xdpsec pcap decrypt --sa-file tunnel-a.keys capture.pcap -w inner.pcap
  xdpsec pcap decrypt --sa 'src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1000 mode tunnel aead rfc4106(gcm(aes)) 0x0102030405060708090a0b0c0d0e0f1011121314 128' capture.pcap --json
  xdpsec pcap encrypt --sa 'src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1000 mode transport enc cbc(aes) 0x000102030405060708090a0b0c0d0e0f auth-trunc hmac(sha256) 0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f 128' plain.pcap -w esp.pcap --seq 4294967290`

type pcapFlags struct {
	sas    stringList
	saFile string
	out    string
	json   bool
	seq    string
}

func newPcapFlagSet(f *pcapFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("pcap", flag.ContinueOnError)
	fs.Var(&f.sas, "sa", "an SA in 'ip xfrm state add' syntax, one quoted argument (repeatable)")
	fs.StringVar(&f.saFile, "sa-file", "", "read the SAs, with their keys, from FILE (chmod 600; - is stdin), one per line, instead of --sa")
	fs.StringVar(&f.out, "w", "", "write the decrypted (decrypt) or protected (encrypt) packets to this pcap file")
	fs.BoolVar(&f.json, "json", false, "decrypt: print one JSON object per packet")
	fs.StringVar(&f.seq, "seq", "", "encrypt: the first sequence number (default 1, or the spec's replay-oseq+1)")
	return fs
}

func init() {
	register(&command{
		name:    "pcap",
		summary: "decrypt or encrypt a capture offline with given SAs",
		usage:   pcapUsage,
		run:     runPcap,
	})
	flagSets["pcap"] = func() *flag.FlagSet { return newPcapFlagSet(&pcapFlags{}) }
}

func runPcap(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("pcap needs a subcommand: decrypt or encrypt")
	}
	sub := args[0]
	if sub == "-h" || sub == "--help" || sub == "help" {
		return flag.ErrHelp
	}
	if sub != "decrypt" && sub != "encrypt" {
		return usagef("unknown pcap subcommand %q (use decrypt or encrypt)", sub)
	}
	var f pcapFlags
	pos, err := parseInterspersed(newPcapFlagSet(&f), args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("pcap %s needs exactly one input capture, got %d arguments (%s)", sub, len(pos), strings.Join(pos, " "))
	}
	if len(f.sas) == 0 && f.saFile == "" {
		return usagef("pcap %s needs its SAs: --sa-file FILE (keys off the command line) or --sa SPEC", sub)
	}
	specs, err := parseSASpecs(f.sas)
	if err != nil {
		return err
	}
	if f.saFile != "" {
		lines, err := readSALines(f.saFile, stderr)
		if err != nil {
			return err
		}
		for _, l := range lines {
			specs = append(specs, l.Spec)
		}
	}
	err = pcapRun(sub, f, pos[0], specs, stdout)
	// Warned once the work is done (a failure stays one line), on stderr
	// so the packet lines on stdout stay parseable.
	if err == nil && slices.ContainsFunc(specs[:len(f.sas)], hasKeyBytes) {
		fmt.Fprintln(stderr, "xdpsec pcap: warning: --sa put the SA's keys on the command line, where every local user can read them (ps, /proc/PID/cmdline; and it stays in shell history); use --sa-file FILE (chmod 600) or --sa-file - instead")
	}
	return err
}

// pcapRun checks the flags of sub and runs it over in.
func pcapRun(sub string, f pcapFlags, in string, specs []*sad.SASpec, stdout io.Writer) error {
	if sub == "decrypt" {
		if f.seq != "" {
			return usagef("--seq is for pcap encrypt (decrypt takes the numbers from the packets)")
		}
		return pcapDecrypt(specs, in, f.out, f.json, stdout)
	}
	if f.out == "" {
		return usagef("pcap encrypt needs -w OUT.pcap")
	}
	if f.json {
		return usagef("--json is for pcap decrypt")
	}
	if f.seq != "" {
		n, err := strconv.ParseUint(f.seq, 0, 64)
		if err != nil || n == 0 {
			return usagef("--seq %q: want a sequence number from 1 to 2^64-1 (2^32-1 without flag esn)", f.seq)
		}
		for i, s := range specs {
			if !s.ESN && n > 1<<32-1 {
				return usagef("--seq %d is above 2^32-1 but SA #%d (counting --sa, then --sa-file lines) has no 'flag esn'", n, i+1)
			}
			s.OutSeq = n - 1
		}
	}
	return pcapEncrypt(specs, in, f.out, stdout)
}

// parseSASpecs parses each --sa argument. Errors name the argument's
// position, never its key bytes (sad.ParseSA guarantees that).
func parseSASpecs(args []string) ([]*sad.SASpec, error) {
	specs := make([]*sad.SASpec, 0, len(args))
	for i, a := range args {
		words, err := sad.Tokenize(a)
		if err != nil {
			return nil, usagef("--sa #%d: %v", i+1, err)
		}
		s, err := sad.ParseSA(words)
		if err != nil {
			return nil, usagef("--sa #%d: %v", i+1, err)
		}
		specs = append(specs, s)
	}
	return specs, nil
}

// frameRoom is the headroom and tailroom of the work buffer: more than
// any SA's Overhead (checked per SA) plus a link header.
const frameRoom = 512

// decryptRecord is one line of `pcap decrypt --json`.
type decryptRecord struct {
	Index       int     `json:"index"`
	Verdict     string  `json:"verdict"`
	SPI         string  `json:"spi,omitempty"`
	Seq         *uint64 `json:"seq,omitempty"`
	InnerSHA256 string  `json:"inner_sha256,omitempty"`
}

func pcapDecrypt(specs []*sad.SASpec, in, out string, asJSON bool, stdout io.Writer) error {
	db := sad.NewSAD(sad.Config{Capacity: len(specs)})
	ports := []uint16{ipsec.NATTPort}
	for i, s := range specs {
		if _, err := db.Add(s); err != nil {
			return usagef("--sa #%d: %v", i+1, err)
		}
		if s.Encap != nil && s.Encap.DstPort != ipsec.NATTPort {
			ports = append(ports, s.Encap.DstPort)
		}
	}
	r, err := pcap.Open(in)
	if err != nil {
		return err
	}
	defer r.Close()
	var w *linkWriter
	if out != "" {
		w = &linkWriter{name: out}
		defer w.close()
	}
	bw := bufio.NewWriter(stdout)
	defer bw.Flush()
	enc := json.NewEncoder(bw)
	buf := make([]byte, 0, 4096)
	counts := map[string]int{}
	for {
		p, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		rec := decryptRecord{Index: p.Index}
		l3, et, err := pcap.L3Offset(p.LinkType, p.Data)
		var res ipsec.Result
		if err != nil {
			rec.Verdict = ipsec.VerdictNotIPsec.String()
		} else {
			// Work on a copy: Decrypt changes the packet in place.
			buf = append(buf[:0], p.Data...)
			pkt := buf[l3:]
			var o ipsec.Outer
			v := ipsec.VerdictNotIPsec
			for _, port := range ports {
				if v = ipsec.ParseOuter(pkt, port, &o); v == ipsec.VerdictOK {
					break
				}
			}
			if v == ipsec.VerdictOK || o.SPI != 0 {
				rec.SPI = fmt.Sprintf("0x%08x", o.SPI)
				seq := uint64(o.Seq)
				rec.Seq = &seq
			}
			if v == ipsec.VerdictOK {
				if a := db.Lookup(o.SPI, o.Dst, o.Proto); a == nil {
					v = ipsec.VerdictNoState
				} else {
					res = a.Transform().DecryptParsed(buf, l3, &o)
					v = res.Verdict
					if v == ipsec.VerdictOK || v == ipsec.VerdictDummy {
						seq := res.Seq
						rec.Seq = &seq
					}
				}
			}
			rec.Verdict = v.String()
			if v == ipsec.VerdictOK {
				sum := sha256.Sum256(buf[res.PayloadOff : res.PayloadOff+res.PayloadN])
				rec.InnerSHA256 = hex.EncodeToString(sum[:])
				if w != nil {
					if err := w.write(p, buf[:l3], et, buf[res.Off:res.Off+res.N]); err != nil {
						return err
					}
				}
			}
		}
		counts[rec.Verdict]++
		if asJSON {
			if err := enc.Encode(&rec); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintf(bw, "%d %s", rec.Index, rec.Verdict)
		if rec.SPI != "" {
			fmt.Fprintf(bw, " spi=%s", rec.SPI)
		}
		if rec.Seq != nil {
			fmt.Fprintf(bw, " seq=%d", *rec.Seq)
		}
		if rec.InnerSHA256 != "" {
			fmt.Fprintf(bw, " inner_sha256=%s", rec.InnerSHA256)
		}
		fmt.Fprintln(bw)
	}
	if !asJSON {
		fmt.Fprintf(bw, "# %s\n", summarize(counts))
	}
	if w != nil {
		return w.close()
	}
	return nil
}

func summarize(counts map[string]int) string {
	var parts []string
	total := 0
	for v := ipsec.Verdict(0); v < ipsec.NumVerdicts; v++ {
		if n := counts[v.String()]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", v, n))
			total += n
		}
	}
	return fmt.Sprintf("%d packets: %s", total, strings.Join(parts, ", "))
}

func pcapEncrypt(specs []*sad.SASpec, in, out string, stdout io.Writer) error {
	sas := make([]*ipsec.SA, len(specs))
	for i, s := range specs {
		sa, err := ipsec.NewSA(s.Params())
		if err != nil {
			return usagef("--sa #%d: %v", i+1, err)
		}
		if h, t := sa.Overhead(); h+64 > frameRoom || t > frameRoom {
			return fmt.Errorf("--sa #%d: overhead %d+%d bytes exceeds the work buffer", i+1, h, t)
		}
		sas[i] = sa
	}
	r, err := pcap.Open(in)
	if err != nil {
		return err
	}
	defer r.Close()
	w := &linkWriter{name: out}
	defer w.close()
	bw := bufio.NewWriter(stdout)
	defer bw.Flush()
	frame := make([]byte, frameRoom+pcap.MaxCaptureLen+frameRoom)
	skipped := 0
	for {
		p, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		l3, et, err := pcap.L3Offset(p.LinkType, p.Data)
		if err != nil {
			fmt.Fprintf(bw, "%d skipped: not an IP packet\n", p.Index)
			skipped++
			continue
		}
		pkt := p.Data[l3:]
		src, dst, n, ok := ipAddrsAndLen(pkt)
		if !ok || p.Truncated() {
			fmt.Fprintf(bw, "%d skipped: truncated or malformed IP header\n", p.Index)
			skipped++
			continue
		}
		var sa *ipsec.SA
		for i, s := range specs {
			if s.Mode == ipsec.ModeTunnel || (s.Src == src && s.Dst == dst) {
				sa = sas[i]
				break
			}
		}
		if sa == nil {
			fmt.Fprintf(bw, "%d skipped: no SA fits %s -> %s (transport SAs need the packet's own src and dst)\n", p.Index, src, dst)
			skipped++
			continue
		}
		copy(frame[frameRoom:], pkt[:n])
		seq := sa.NextSeq()
		off, m, err := sa.Encrypt(frame, frameRoom, n)
		if err != nil {
			return fmt.Errorf("encrypt packet %d with spi 0x%08x: %w", p.Index, sa.SPI(), err)
		}
		fmt.Fprintf(bw, "%d encrypted spi=0x%08x seq=%d\n", p.Index, sa.SPI(), seq)
		if err := w.write(p, p.Data[:l3], et, frame[off:off+m]); err != nil {
			return err
		}
	}
	fmt.Fprintf(bw, "# wrote %d packets to %s, skipped %d\n", w.count(), out, skipped)
	return w.close()
}

// ipAddrsAndLen reads the addresses and the length of the IPv4/IPv6
// packet at the start of pkt (captures may carry link padding after it).
func ipAddrsAndLen(pkt []byte) (src, dst netip.Addr, n int, ok bool) {
	if len(pkt) < 1 {
		return
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return
		}
		n = int(binary.BigEndian.Uint16(pkt[2:4]))
		src = netip.AddrFrom4([4]byte(pkt[12:16]))
		dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		ok = n >= 20 && n <= len(pkt)
	case 6:
		if len(pkt) < 40 {
			return
		}
		n = 40 + int(binary.BigEndian.Uint16(pkt[4:6]))
		src = netip.AddrFrom16([16]byte(pkt[8:24]))
		dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		ok = n <= len(pkt)
	}
	return
}

// linkWriter writes packets with their original link header in front of a
// new IP packet. The file is created at the first packet, with that
// packet's link type (raw IP for the IPv4-only and IPv6-only types, whose
// family the new packet may not have).
type linkWriter struct {
	name string
	w    *pcap.Writer
	lt   pcap.LinkType
	buf  []byte
	err  error
}

func (lw *linkWriter) write(p pcap.Packet, l2 []byte, et uint16, ip []byte) error {
	lt := p.LinkType
	if lt == pcap.LinkTypeIPv4 || lt == pcap.LinkTypeIPv6 {
		lt, l2 = pcap.LinkTypeRaw, nil
	}
	if lw.w == nil {
		w, err := pcap.Create(lw.name, lt, pcap.Nanosecond)
		if err != nil {
			return err
		}
		lw.w, lw.lt = w, lt
	}
	newET := pcap.EtherTypeIPv4
	if len(ip) > 0 && ip[0]>>4 == 6 {
		newET = pcap.EtherTypeIPv6
	}
	lw.buf = append(append(lw.buf[:0], l2...), ip...)
	if newET != et {
		// The family changed (4-in-6 or 6-in-4 tunnel): fix the protocol
		// field of the link header.
		switch lt {
		case pcap.LinkTypeEthernet:
			binary.BigEndian.PutUint16(lw.buf[len(l2)-2:], newET)
		case pcap.LinkTypeLinuxSLL:
			binary.BigEndian.PutUint16(lw.buf[14:], newET)
		case pcap.LinkTypeLinuxSLL2:
			binary.BigEndian.PutUint16(lw.buf[0:], newET)
		}
	}
	out := lw.buf
	if lt != lw.lt {
		if lw.lt != pcap.LinkTypeEthernet {
			return fmt.Errorf("write %s: packet %d has link type %s, the file has %s (mixed link types need Ethernet first)", lw.name, p.Index, lt, lw.lt)
		}
		e, err := pcap.EthernetFrame(nil, lt, lw.buf)
		if err != nil {
			return fmt.Errorf("write %s: packet %d: %w", lw.name, p.Index, err)
		}
		out = e
	}
	if err := lw.w.WritePacket(p.Timestamp, out); err != nil {
		return fmt.Errorf("write %s: %w", lw.name, err)
	}
	return nil
}

func (lw *linkWriter) count() int {
	if lw.w == nil {
		return 0
	}
	return lw.w.Count()
}

// close closes the file once; an input without packets to write still
// gets a valid (empty, Ethernet) capture so scripts find the file.
func (lw *linkWriter) close() error {
	if lw.w == nil {
		w, err := pcap.Create(lw.name, pcap.LinkTypeEthernet, pcap.Nanosecond)
		if err != nil {
			return err
		}
		lw.w = w
	}
	if lw.err == nil {
		lw.err = lw.w.Close()
		if lw.err == nil {
			lw.err = errClosed
		}
	}
	if lw.err == errClosed {
		return nil
	}
	return lw.err
}

var errClosed = errors.New("closed")
