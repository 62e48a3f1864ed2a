package afxdp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

// testPort is the UDP destination port the test redirect program steers to
// the XSK; everything else (ARP, IPv6 ND) passes to the kernel.
const testPort = 4789

// newXSKMap creates an XSKMAP with one slot per rx queue.
func newXSKMap(tb testing.TB, queues int) *ebpf.Map {
	tb.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "xsks",
		Type:       ebpf.XSKMap,
		KeySize:    4,
		ValueSize:  4,
		MaxEntries: uint32(queues),
	})
	if err != nil {
		tb.Fatalf("create XSKMAP: %v", err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

// newRedirectProg builds the minimal steering program the tests need:
// IPv4 (no options) UDP to port goes to bpf_redirect_map(&xsks,
// ctx->rx_queue_index, XDP_PASS); any other frame gets XDP_PASS.
func newRedirectProg(tb testing.TB, xsks *ebpf.Map, port uint16) *ebpf.Program {
	tb.Helper()
	var be [2]byte
	binary.BigEndian.PutUint16(be[:], port)
	portLE := int32(binary.LittleEndian.Uint16(be[:])) // a BPF half-word load is little-endian
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 14+20+8),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half), // ethertype
		asm.JNE.Imm(asm.R5, 0x0008, "pass"),       // htons(ETH_P_IP)
		asm.LoadMem(asm.R5, asm.R2, 14, asm.Byte), // version/IHL
		asm.JNE.Imm(asm.R5, 0x45, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 14+9, asm.Byte), // protocol
		asm.JNE.Imm(asm.R5, 17, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 14+20+2, asm.Half), // UDP dport
		asm.JNE.Imm(asm.R5, portLE, "pass"),
		asm.LoadMem(asm.R2, asm.R6, 16, asm.Word), // rx_queue_index
		asm.LoadMapPtr(asm.R1, xsks.FD()),
		asm.Mov.Imm(asm.R3, 2), // XDP_PASS if the slot is empty
		asm.FnRedirectMap.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("pass"),
		asm.Return(),
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "xsk_redirect",
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: insns,
	})
	if err != nil {
		tb.Fatalf("load redirect program: %v", err)
	}
	tb.Cleanup(func() { prog.Close() })
	return prog
}

// newReturnProg builds an XDP program that returns action.
func newReturnProg(tb testing.TB, action int32) *ebpf.Program {
	tb.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "xdp_ret",
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, action), asm.Return()},
	})
	if err != nil {
		tb.Fatalf("load XDP program: %v", err)
	}
	tb.Cleanup(func() { prog.Close() })
	return prog
}

// attachXDP attaches prog in driver (native) mode to ifindex inside ns; the
// returned link can swap the program (Update) and is closed at cleanup.
func attachXDP(tb testing.TB, ns *testutil.NS, prog *ebpf.Program, ifindex int) link.Link {
	tb.Helper()
	var l link.Link
	err := ns.Do(func() error {
		var err error
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		tb.Fatalf("attach XDP to ifindex %d in %s: %v", ifindex, ns.Name, err)
	}
	tb.Cleanup(func() { l.Close() })
	return l
}

// openIn opens a socket inside ns and closes it when the test ends.
func openIn(tb testing.TB, ns *testutil.NS, cfg Config) *Socket {
	tb.Helper()
	var s *Socket
	err := ns.Do(func() error {
		var err error
		s, err = Open(cfg)
		return err
	})
	if err != nil {
		tb.Fatalf("open AF_XDP socket: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// rxSetup is a veth pair whose A end steers UDP to testPort into an XSK.
func rxSetup(tb testing.TB, cfg Config) (*testutil.VethPair, *Socket) {
	tb.Helper()
	p := testutil.NewVethPair(tb)
	xsks := newXSKMap(tb, 1)
	attachXDP(tb, p.A, newRedirectProg(tb, xsks, testPort), p.IndexA)
	cfg.Ifindex = p.IndexA
	s := openIn(tb, p.A, cfg)
	if err := xsks.Put(uint32(0), uint32(s.FD())); err != nil {
		tb.Fatalf("put XSK fd in XSKMAP: %v", err)
	}
	return p, s
}

// udpFrame builds an Ethernet/IPv4/UDP frame with a valid IPv4 header
// checksum and a zero (absent) UDP checksum.
func udpFrame(dst, src net.HardwareAddr, srcIP, dstIP netip.Addr, sport, dport uint16, payload []byte) []byte {
	f := make([]byte, 14+20+8+len(payload))
	writeUDPHeaders(f, dst, src, srcIP, dstIP, sport, dport, len(payload))
	copy(f[42:], payload)
	return f
}

// writeUDPHeaders writes the 42 bytes of Ethernet, IPv4 and UDP headers for
// a payload of n bytes at the start of f.
func writeUDPHeaders(f []byte, dst, src net.HardwareAddr, srcIP, dstIP netip.Addr, sport, dport uint16, n int) {
	copy(f[0:6], dst)
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0], ip[1] = 0x45, 0
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+n))
	binary.BigEndian.PutUint16(ip[4:], 0)
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
	ip[8], ip[9] = 64, 17
	ip[10], ip[11] = 0, 0
	s4, d4 := srcIP.As4(), dstIP.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	udp := f[34:42]
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+n))
	binary.BigEndian.PutUint16(udp[6:], 0)
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
