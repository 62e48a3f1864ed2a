package testutil

import "encoding/binary"

// InnerUDP4 writes, at frame[off:], the IPv4/UDP test packet that the
// transform, SAD, metrics and drop-capture tests encrypt:
// 198.51.100.1:4000 -> 203.0.113.1:5000 carrying payload, with a correct
// IPv4 header checksum and UDP checksum 0 (allowed over IPv4). It returns
// the packet's length; frame must hold off + 28 + len(payload) bytes.
func InnerUDP4(frame []byte, off int, payload []byte) int {
	n := 20 + 8 + len(payload)
	p := frame[off : off+n]
	clear(p[:28])
	p[0], p[8], p[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(p[2:], uint16(n))
	copy(p[12:], []byte{198, 51, 100, 1, 203, 0, 113, 1})
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(p[20:], 4000)
	binary.BigEndian.PutUint16(p[22:], 5000)
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	return n
}
