package tun

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/userspace/engine/gso"
)

// The tests of this file let the Linux stack judge engine/gso: packets
// coalesced by gso.Coalescer are written into a vnet_hdr TUN and a real TCP
// socket must receive exactly the bytes sent; super-packets the kernel's
// TCP hands to the TUN are cut by gso.Segmenter and every segment's
// checksums are verified here (with this file's own RFC 1071 sum) and the
// stream compared with what the socket wrote.

func newVnetDevice(t *testing.T) (*testutil.NS, *Device) {
	t.Helper()
	ns := testutil.NewNS(t, t.Name())
	var d *Device
	if err := ns.Do(func() error {
		var err error
		d, err = Create(Config{
			Name: "xv%d", Queues: 1, MTU: 1400, TxQueueLen: 1000, VnetHdr: true,
			Addrs:  []netip.Prefix{tunAddr4, tunAddr6},
			Routes: []netip.Prefix{remote4, remote6},
		})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if d.Offloads()&(OffloadCsum|OffloadTSO4|OffloadTSO6) != OffloadCsum|OffloadTSO4|OffloadTSO6 {
		t.Fatalf("offloads %#x: want at least csum|tso4|tso6", d.Offloads())
	}
	return ns, d
}

const (
	tcpSYN = 0x02
	tcpACK = 0x10
	tcpPSH = 0x08
)

// buildTCP returns an IPv4/IPv6 TCP packet with correct checksums.
func buildTCP(src, dst netip.Addr, sport, dport uint16, seq, ack uint32, flags byte, opts, payload []byte) []byte {
	tcp := make([]byte, 20+len(opts)+len(payload))
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = byte((20+len(opts))/4) << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	copy(tcp[20:], opts)
	copy(tcp[20+len(opts):], payload)
	var p []byte
	var ps uint32
	if src.Is4() {
		p = make([]byte, 20, 20+len(tcp))
		p[0], p[6], p[8], p[9] = 0x45, 0x40, 64, 6
		binary.BigEndian.PutUint16(p[2:], uint16(20+len(tcp)))
		s, d := src.As4(), dst.As4()
		copy(p[12:], s[:])
		copy(p[16:], d[:])
		binary.BigEndian.PutUint16(p[10:], ^fold(sum(p[:20], 0)))
		ps = sum(p[12:20], 0) + 6 + uint32(len(tcp))
	} else {
		p = make([]byte, 40, 40+len(tcp))
		p[0], p[6], p[7] = 0x60, 6, 64
		binary.BigEndian.PutUint16(p[4:], uint16(len(tcp)))
		s, d := src.As16(), dst.As16()
		copy(p[8:], s[:])
		copy(p[24:], d[:])
		ps = sum(p[8:40], 0) + 6 + uint32(len(tcp))
	}
	binary.BigEndian.PutUint16(tcp[16:], ^fold(sum(tcp, ps)))
	return append(p, tcp...)
}

// tcpOf returns the TCP header offset of an IPv4/IPv6 TCP packet, or -1.
func tcpOf(p []byte) int {
	switch {
	case len(p) >= 40 && p[0]>>4 == 4 && p[9] == 6:
		return int(p[0]&0xf) * 4
	case len(p) >= 60 && p[0]>>4 == 6 && p[6] == 6:
		return 40
	}
	return -1
}

// checksumsOK verifies the IPv4 header and TCP checksums of p.
func checksumsOK(p []byte) bool {
	l4 := tcpOf(p)
	var ps uint32
	if p[0]>>4 == 4 {
		if fold(sum(p[:l4], 0)) != 0xffff || int(binary.BigEndian.Uint16(p[2:])) != len(p) {
			return false
		}
		ps = sum(p[12:20], 0) + 6 + uint32(len(p)-l4)
	} else {
		if int(binary.BigEndian.Uint16(p[4:]))+40 != len(p) {
			return false
		}
		ps = sum(p[8:40], 0) + 6 + uint32(len(p)-l4)
	}
	return fold(sum(p[l4:], ps)) == 0xffff
}

var zeroHdr [VnetHdrLen]byte

// readTCP reads from q until a TCP packet with flags&want == want arrives
// (segmenting and checking nothing), bounded by deadline.
func readTCP(t *testing.T, q *Queue, buf []byte, want byte, deadline time.Time) []byte {
	t.Helper()
	var s gso.Segmenter
	seg := make([]byte, 2048)
	for time.Now().Before(deadline) {
		bufs, sizes := [][]byte{buf}, []int{0}
		n, err := q.Read(bufs, sizes, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			continue
		}
		var h gso.Hdr
		if err := h.Decode(buf); err != nil {
			t.Fatal(err)
		}
		if err := s.Reset(buf[VnetHdrLen:sizes[0]], h); err != nil {
			t.Fatalf("read packet the segmenter refuses: %v (hdr %+v)", err, h)
		}
		m, err := s.Next(seg)
		if err != nil {
			t.Fatal(err)
		}
		p := seg[:m]
		if l4 := tcpOf(p); l4 > 0 && p[l4+13]&want == want {
			return bytes.Clone(p)
		}
	}
	t.Fatalf("no TCP packet with flags %#x before the deadline", want)
	return nil
}

func TestVnetCoalescedWriteReachesSocket(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(map[bool]string{false: "ipv4", true: "ipv6"}[v6], func(t *testing.T) {
			ns, d := newVnetDevice(t)
			q := d.Queue(0)
			local, remote := tunAddr4.Addr(), remoteIP4
			if v6 {
				local, remote = tunAddr6.Addr(), remoteIP6
			}
			var ln *net.TCPListener
			if err := ns.Do(func() error {
				var err error
				ln, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 5201)))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			deadline := time.Now().Add(10 * time.Second)
			mss := []byte{2, 4, 0x05, 0x78} // MSS 1400
			syn := buildTCP(remote, local, 40000, 5201, 1000, 0, tcpSYN, mss, nil)
			if n, err := q.Writev([][][]byte{{zeroHdr[:], syn}}, nil); n != 1 {
				t.Fatalf("write SYN: %d, %v", n, err)
			}
			buf := make([]byte, 65536+VnetHdrLen)
			synack := readTCP(t, q, buf, tcpSYN|tcpACK, deadline)
			l4 := tcpOf(synack)
			peerSeq := binary.BigEndian.Uint32(synack[l4+4:]) + 1
			ack := buildTCP(remote, local, 40000, 5201, 1001, peerSeq, tcpACK, nil, nil)
			if n, err := q.Writev([][][]byte{{zeroHdr[:], ack}}, nil); n != 1 {
				t.Fatalf("write ACK: %d, %v", n, err)
			}
			// 40 segments of 1000 bytes in one batch: one super-packet
			// (the coalescer's limit is 64 segments and 64 KiB).
			data := make([]byte, 40*1000)
			rand.Read(data)
			c := gso.NewCoalescer(64)
			for i := 0; i < 40; i++ {
				fl := byte(tcpACK)
				if i == 39 {
					fl |= tcpPSH
				}
				seg := buildTCP(remote, local, 40000, 5201, 1001+uint32(i*1000), peerSeq, fl, nil, data[i*1000:(i+1)*1000])
				if !c.Add(seg) {
					t.Fatal("coalescer full")
				}
			}
			out := c.Flush()
			if len(out) != 1 {
				t.Fatalf("40 in-order segments coalesced into %d packets, want 1", len(out))
			}
			before := q.Stats()
			if n, err := q.Writev(out, nil); n != 1 {
				t.Fatalf("kernel refused the coalesced packet: %d, %v (stats %+v)", n, err, q.Stats())
			}
			if got := q.Stats().TxPackets - before.TxPackets; got != 1 {
				t.Fatalf("%d writes for 40 segments", got)
			}
			ln.SetDeadline(deadline)
			conn, err := ln.AcceptTCP()
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(deadline)
			got := make([]byte, len(data))
			if _, err := io.ReadFull(conn, got); err != nil {
				t.Fatalf("socket read: %v", err)
			}
			if !bytes.Equal(got, data) {
				t.Fatal("the socket received other bytes than were coalesced")
			}
		})
	}
}

func TestVnetSegmentKernelSuperPackets(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(map[bool]string{false: "ipv4", true: "ipv6"}[v6], func(t *testing.T) {
			ns, d := newVnetDevice(t)
			q := d.Queue(0)
			local, remote := tunAddr4.Addr(), remoteIP4
			if v6 {
				local, remote = tunAddr6.Addr(), remoteIP6
			}
			data := make([]byte, 400_000)
			rand.Read(data)
			deadline := time.Now().Add(15 * time.Second)
			// The client: dial (the handshake is answered below), write
			// everything, close.
			dialed := make(chan error, 1)
			go func() {
				dialed <- ns.Do(func() error {
					dl := net.Dialer{Deadline: deadline, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0))}
					conn, err := dl.Dial("tcp", net.JoinHostPort(remote.String(), "5201"))
					if err != nil {
						return err
					}
					defer conn.Close()
					conn.SetDeadline(deadline)
					_, err = conn.Write(data)
					return err
				})
			}()
			buf := make([]byte, 65536+VnetHdrLen)
			syn := readTCP(t, q, buf, tcpSYN, deadline)
			l4 := tcpOf(syn)
			sport := binary.BigEndian.Uint16(syn[l4:])
			isn := binary.BigEndian.Uint32(syn[l4+4:])
			const mss = 1000
			synack := buildTCP(remote, local, 5201, sport, 7000, isn+1, tcpSYN|tcpACK, []byte{2, 4, mss >> 8, mss & 0xff}, nil)
			if n, err := q.Writev([][][]byte{{zeroHdr[:], synack}}, nil); n != 1 {
				t.Fatalf("write SYN-ACK: %d, %v", n, err)
			}
			var s gso.Segmenter
			seg := make([]byte, 2048)
			var stream []byte
			supers, segs := 0, 0
			next := isn + 1
			for len(stream) < len(data) && time.Now().Before(deadline) {
				bufs, sizes := [][]byte{buf}, []int{0}
				n, err := q.Read(bufs, sizes, 100*time.Millisecond)
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					continue
				}
				var h gso.Hdr
				h.Decode(buf)
				if err := s.Reset(buf[VnetHdrLen:sizes[0]], h); err != nil {
					t.Fatalf("segmenter refuses a kernel packet (hdr %+v): %v", h, err)
				}
				if h.GSOType != gso.GSONone {
					supers++
				}
				for {
					m, err := s.Next(seg)
					if err != nil {
						t.Fatal(err)
					}
					if m == 0 {
						break
					}
					p := seg[:m]
					l4 := tcpOf(p)
					if l4 < 0 || binary.BigEndian.Uint16(p[l4+2:]) != 5201 {
						continue
					}
					if !checksumsOK(p) {
						t.Fatalf("segment %d: bad checksum or length (hdr %+v)", segs, h)
					}
					thl := int(p[l4+12]>>4) * 4
					pay := p[l4+thl:]
					if len(pay) > mss {
						t.Fatalf("segment of %d payload bytes > MSS %d", len(pay), mss)
					}
					segs++
					if seq := binary.BigEndian.Uint32(p[l4+4:]); seq == next && len(pay) > 0 {
						stream = append(stream, pay...)
						next += uint32(len(pay))
					}
				}
				ack := buildTCP(remote, local, 5201, sport, 7001, next, tcpACK, nil, nil)
				q.Writev([][][]byte{{zeroHdr[:], ack}}, nil)
			}
			if !bytes.Equal(stream, data) {
				t.Fatalf("reassembled %d of %d bytes; equal prefix: %v", len(stream), len(data), bytes.Equal(stream, data[:len(stream)]))
			}
			if supers == 0 {
				t.Fatal("the kernel handed out no GSO super-packet: segmentation untested")
			}
			t.Logf("%d super-packets, %d segments, %s bytes", supers, segs, strconv.Itoa(len(stream)))
			// Let the client finish (its FIN is not answered; Close does not wait).
			select {
			case err := <-dialed:
				if err != nil {
					t.Fatalf("client: %v", err)
				}
			case <-time.After(time.Until(deadline)):
				t.Fatal(fmt.Errorf("client did not finish"))
			}
		})
	}
}

// TestVnetCoalescedUDPReachesSocket: 30 datagrams of one flow coalesced
// into one GSO_UDP_L4 write arrive at a plain UDP socket as the 30
// datagrams, each byte-exact.
func TestVnetCoalescedUDPReachesSocket(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(map[bool]string{false: "ipv4", true: "ipv6"}[v6], func(t *testing.T) {
			ns, d := newVnetDevice(t)
			q := d.Queue(0)
			local, remote := tunAddr4.Addr(), remoteIP4
			if v6 {
				local, remote = tunAddr6.Addr(), remoteIP6
			}
			var conn *net.UDPConn
			if err := ns.Do(func() error {
				var err error
				conn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 5400)))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			c := gso.NewCoalescer(64)
			var sent [][]byte
			for i := 0; i < 30; i++ {
				pay := make([]byte, 900)
				if i == 29 {
					pay = pay[:333]
				}
				rand.Read(pay)
				sent = append(sent, pay)
				c.Add(buildUDP(remote, local, 4000, 5400, pay))
			}
			out := c.Flush()
			if len(out) != 1 {
				t.Fatalf("30 datagrams coalesced into %d packets, want 1", len(out))
			}
			if n, err := q.Writev(out, nil); n != 1 {
				t.Fatalf("kernel refused the GSO_UDP_L4 packet: %v (stats %+v)", err, q.Stats())
			}
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 2048)
			for i, want := range sent {
				n, err := conn.Read(buf)
				if err != nil {
					t.Fatalf("datagram %d: %v", i, err)
				}
				if !bytes.Equal(buf[:n], want) {
					t.Fatalf("datagram %d: %d bytes, not the %d sent", i, n, len(want))
				}
			}
		})
	}
}
