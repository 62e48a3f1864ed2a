package ipsec

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
)

// TestNATTTransportChecksums: TCP and UDP over IPv4 and IPv6 in
// transport-mode ESP-in-UDP cross a NAT that rewrites the sender's
// address; after Decrypt, scapy (the judge) recomputes each TCP/UDP
// checksum over the addresses the packet now carries and must find the
// one we left (RFC 3948 §3.1.2). Before the fix-up the checksum still
// covered the sender's address and the kernel dropped every segment.
func TestNATTTransportChecksums(t *testing.T) {
	if _, err := exec.Command("/usr/bin/python3", "-c", "import scapy").CombinedOutput(); err != nil {
		t.Skip("needs /usr/bin/python3 with scapy (Debian's python3-scapy)")
	}
	const gen = `
from scapy.all import IP, IPv6, TCP, UDP, Raw
ps = [IP(src="192.0.2.1", dst="198.51.100.2")/TCP(sport=40000, dport=443, flags="PA", seq=7)/Raw(b"hello, tcp"),
      IP(src="192.0.2.1", dst="198.51.100.2")/UDP(sport=40001, dport=53)/Raw(b"odd-length udp"[:13]),
      IPv6(src="2001:db8::1", dst="2001:db8:1::2")/TCP(sport=40002, dport=22)/Raw(b"v6 tcp"),
      IPv6(src="2001:db8::1", dst="2001:db8:1::2")/UDP(sport=40003, dport=123)/Raw(b"v6 udp!")]
print(" ".join(bytes(p).hex() for p in ps))
`
	out, err := exec.Command("/usr/bin/python3", "-c", gen).Output()
	if err != nil {
		t.Fatalf("scapy: %v", err)
	}
	natted := map[bool]netip.Addr{false: netip.MustParseAddr("203.0.113.77"), true: netip.MustParseAddr("2001:db8:ff::77")}
	var decrypted []string
	for _, h := range strings.Fields(string(out)) {
		pkt, _ := hex.DecodeString(h)
		v6 := pkt[0]>>4 == 6
		p := SAParams{Proto: ProtoESP, Mode: ModeTransport, SPI: 0x4500, Src: addr4a, Dst: addr4b,
			AEAD: AlgorithmKey{Name: "rfc4106(gcm(aes))", Key: key(20, 3), ICVBits: 128}, EncapSrcPort: 4500, EncapDstPort: 4500}
		if v6 {
			p.Src, p.Dst = addr6a, addr6b
		}
		tx, rx := newPair(t, p)
		enc := seal(t, tx, pkt)
		// The NAT rewrites the source address (and, for IPv4, the header
		// checksum; the outer UDP checksum is 0 or not checked).
		if v6 {
			a := natted[true].As16()
			copy(enc[8:24], a[:])
		} else {
			a := natted[false].As4()
			copy(enc[12:16], a[:])
			ipv4Checksum(enc[:20])
		}
		f := frameWith(enc)
		r := rx.Decrypt(f, testHead, len(enc))
		if r.Verdict != VerdictOK {
			t.Fatalf("decrypt after NAT: %v", r.Verdict)
		}
		got := f[r.Off : r.Off+r.N]
		if binary.BigEndian.Uint16(got[r.PayloadOff-r.Off:]) == 0 {
			t.Fatal("decapsulated packet lost its ports")
		}
		decrypted = append(decrypted, hex.EncodeToString(got))
	}
	const judge = `
import sys, json
from scapy.all import IP, IPv6, TCP, UDP
res = []
for h in sys.argv[1:]:
    b = bytes.fromhex(h)
    p = IP(b) if b[0] >> 4 == 4 else IPv6(b)
    l4 = p[TCP] if TCP in p else p[UDP]
    have = l4.chksum
    del l4.chksum
    q = IP(bytes(p)) if b[0] >> 4 == 4 else IPv6(bytes(p))
    want = (q[TCP] if TCP in q else q[UDP]).chksum
    res.append([p.src, have, want])
print(json.dumps(res))
`
	out, err = exec.Command("/usr/bin/python3", append([]string{"-c", judge}, decrypted...)...).Output()
	if err != nil {
		t.Fatalf("scapy judge: %v", err)
	}
	var res [][]any
	if err := json.Unmarshal(out, &res); err != nil || len(res) != 4 {
		t.Fatalf("scapy judge said %s (%v)", out, err)
	}
	for i, r := range res {
		if r[1] != r[2] {
			t.Errorf("packet %d from %v: TCP/UDP checksum %v, scapy computes %v", i, r[0], r[1], r[2])
		}
		if src := r[0].(string); src != natted[false].String() && src != natted[true].String() {
			t.Errorf("packet %d: source %s, want the NAT's address", i, src)
		}
	}
}
