#!/usr/bin/python3
"""Crafted IPsec and plain traffic for xdpsec's end-to-end tests and demo.

Every packet is built with scapy (an implementation independent of xdpsec) and
carries what the datapath must do with it, written down from the rules in
issue 2 and RFC 4303/4302/3948, not from xdpsec's code.

  traffic.py sas                     the SAs the expectations assume, one
                                     'ip xfrm state' spec per line
  traffic.py pcap OUT.pcap OUT.jsonl the packets as a pcap, and per packet the
                                     expected {"index","verdict","reason","spi"}
  traffic.py send IFACE DSTMAC [N]   send every packet N times (default 1) out of
                                     IFACE to DSTMAC, then print the expected
                                     reason counts as JSON
  traffic.py send-otherhost IFACE DSTMAC [N]
                                     the same to DSTMAC, a unicast MAC that is
                                     not the receiver's: the receiving kernel
                                     drops every IP packet (PACKET_OTHERHOST),
                                     and xdpsec must not steer any; the ESP, AH
                                     and UDP ones (IPv6: also any extension
                                     header first) count pass-otherhost, the
                                     others what they count to the right MAC

Addresses are from the documentation ranges: the receiver is 192.0.2.1 and
2001:db8::1, the sender 192.0.2.2 and 2001:db8::2 (internal/testutil's pair).
Run it with Debian's /usr/bin/python3 (scapy 2.5).
"""
import json
import sys

RX4, TX4 = "192.0.2.1", "192.0.2.2"
RX6, TX6 = "2001:db8::1", "2001:db8::2"
NATT_EXTRA = 4501  # the receiver is attached with --nat-t-port 4501

SAS = [
    f"src {TX4} dst {RX4} proto esp spi 0x00001001",
    f"src {TX4} dst {RX4} proto esp spi 0x00002002 encap espinudp 4500 4500 0.0.0.0",
    f"src {TX6} dst {RX6} proto ah spi 0x00003003",
    f"src {TX6} dst {RX6} proto esp spi 0x00004004",
    f"src {TX4} dst {RX4} proto esp spi 0x00005005 encap espinudp {NATT_EXTRA} {NATT_EXTRA} 0.0.0.0",
]

PAYLOAD = bytes(range(48))  # stands in for IV, ciphertext and ICV


def packets(src_mac="02:00:00:00:00:02", dst_mac="02:00:00:00:00:01"):
    """Return [(frame, verdict, reason, spi or None)]."""
    # Imported here: scapy takes a second or two to load, `sas` needs none.
    from scapy.all import (ARP, ICMP, IP, TCP, UDP, Dot1AD, Dot1Q, Ether,
                           IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,
                           IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, Raw)
    from scapy.layers.inet6 import ICMPv6EchoRequest
    from scapy.layers.ipsec import AH, ESP

    def esp(spi, seq=1):
        return ESP(spi=spi, seq=seq, data=PAYLOAD)

    eth = Ether(src=src_mac, dst=dst_mac)
    v4 = IP(src=TX4, dst=RX4)
    v6 = IPv6(src=TX6, dst=RX6)
    steer = ("steer", "steer-fallback")  # no AF_XDP socket is bound
    out = []

    def add(frame, verdict, reason, spi=None):
        out.append((frame, verdict, reason, spi))

    # ESP directly over IPv4 (RFC 4303): known SPI, unknown SPI, SPI 0.
    add(eth / v4 / esp(0x1001), *steer, 0x1001)
    add(eth / v4 / esp(0x1001, seq=2), *steer, 0x1001)
    add(eth / v4 / esp(0x9999), "pass", "no-state", 0x9999)
    add(eth / IP(src=TX4, dst=RX4, proto=50) / Raw(bytes(4) + PAYLOAD[:12]), "drop", "malformed-esp")
    # An ESP header cut short: 6 bytes, less than SPI + sequence number.
    pkt = IP(src=TX4, dst=RX4, proto=50) / Raw(b"\x00\x00\x10\x01\x00\x00")
    add(eth / pkt, "drop", "malformed-esp")
    # IPv4 with options before ESP.
    add(eth / IP(src=TX4, dst=RX4, options=b"\x01\x01\x01\x00") / esp(0x1001), *steer, 0x1001)
    # 802.1Q and 802.1ad + 802.1Q (QinQ) tags before the IP header.
    add(eth / Dot1Q(vlan=10) / v4 / esp(0x1001), *steer, 0x1001)
    add(Ether(src=src_mac, dst=dst_mac, type=0x88a8) / Dot1AD(vlan=20) / Dot1Q(vlan=30) / v4 / esp(0x1001), *steer, 0x1001)
    # A fragment of anything passes: the kernel reassembles.
    add(eth / IP(src=TX4, dst=RX4, flags="MF", frag=0, proto=50) / Raw(bytes(64)), "pass", "pass-fragment")
    add(eth / IP(src=TX4, dst=RX4, frag=8, proto=50) / Raw(bytes(16)), "pass", "pass-fragment")

    # UDP encapsulation (RFC 3948) on 4500 and on the extra port.
    add(eth / v4 / UDP(sport=4500, dport=4500) / esp(0x2002), *steer, 0x2002)
    add(eth / v4 / UDP(sport=4500, dport=4500) / esp(0x7777), "pass", "no-state", 0x7777)
    add(eth / v4 / UDP(sport=NATT_EXTRA, dport=NATT_EXTRA) / esp(0x5005), *steer, 0x5005)
    # An SA received on 4500 but configured without encapsulation.
    add(eth / v4 / UDP(sport=4500, dport=4500) / esp(0x1001), "pass", "state-mismatch", 0x1001)
    # IKE: non-ESP marker (4 zero bytes) on 4500, plain IKE on 500.
    add(eth / v4 / UDP(sport=4500, dport=4500) / Raw(bytes(4) + bytes(range(28))), "pass", "pass-ike")
    add(eth / v4 / UDP(sport=500, dport=500) / Raw(bytes(range(28))), "pass", "pass-ike")
    # NAT keepalive: a single 0xFF byte.
    add(eth / v4 / UDP(sport=4500, dport=4500) / Raw(b"\xff"), "pass", "pass-keepalive")
    # Not ESP: 2 payload bytes, or an ESP header with nothing after it. The
    # kernel hands both to the IKE socket (ESP needs more than 8 bytes).
    add(eth / v4 / UDP(sport=4500, dport=4500) / Raw(b"\x01\x02"), "pass", "pass-ike")
    add(eth / v4 / UDP(sport=4500, dport=4500) / Raw(bytes.fromhex("0000200200000001")), "pass", "pass-ike")
    # A UDP length beyond the datagram is malformed.
    add(eth / v4 / UDP(sport=4500, dport=4500, len=200) / esp(0x2002), "drop", "malformed-udp")
    # A wrong IPv4 header checksum (RFC 1122 3.2.1.2) on a known SA: the
    # kernel judges it (and drops it); the SA counts the match.
    add(eth / IP(src=TX4, dst=RX4, chksum=0x1234) / esp(0x1001), "pass", "pass-unparsed", 0x1001)
    add(eth / IP(src=TX4, dst=RX4, chksum=0x1234) / UDP(sport=4500, dport=4500) / esp(0x2002), "pass", "pass-unparsed", 0x2002)

    # IPv6: AH (RFC 4302), AH followed by ESP, ESP after extension headers.
    # scapy leaves AH's length at 0 outside a SecurityAssociation: set it,
    # in 32-bit words minus 2 (12-byte header + 12-byte ICV = 6 - 2).
    ah6 = AH(spi=0x3003, seq=1, icv=bytes(12), nh=59, payloadlen=4)
    add(eth / v6 / ah6, *steer, 0x3003)
    add(eth / v6 / AH(spi=0x3003, seq=2, icv=bytes(12), nh=50, payloadlen=4) / esp(0x4004), *steer, 0x3003)
    add(eth / v6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / esp(0x4004), *steer, 0x4004)
    add(eth / v6 / esp(0x4005), "pass", "no-state", 0x4005)
    # A routing header with segments left: in transit, the kernel forwards.
    add(eth / v6 / IPv6ExtHdrRouting(segleft=1, addresses=["2001:db8::3"]) / esp(0x4004), "pass", "pass-other")
    add(eth / v6 / IPv6ExtHdrRouting(segleft=0, addresses=["2001:db8::3"]) / esp(0x4004), *steer, 0x4004)
    # An atomic fragment (offset 0, M 0; RFC 6946) is processed alone; a
    # first fragment goes to the kernel to reassemble.
    add(eth / v6 / IPv6ExtHdrFragment(offset=0, m=0, id=7) / esp(0x4004), *steer, 0x4004)
    add(eth / v6 / IPv6ExtHdrFragment(offset=0, m=1, id=8) / esp(0x4004), "pass", "pass-fragment")
    # Hop-by-hop anywhere but first: the kernel drops it.
    add(eth / v6 / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / esp(0x4004), "pass", "pass-unparsed")
    # ESP in UDP over IPv6 with a zero UDP checksum (RFC 8200 8.1): the
    # kernel's UDP layer decides.
    add(eth / v6 / UDP(sport=4500, dport=4500, chksum=0) / esp(0x4004), "pass", "pass-unparsed")
    # AH whose length field points past the packet.
    bad_ah = AH(spi=0x3003, seq=1, icv=bytes(12), nh=59, payloadlen=40)
    add(eth / v6 / bad_ah, "drop", "malformed-ah")

    # Everything else: ICMP, TCP, plain UDP, ICMPv6, ARP.
    add(eth / v4 / ICMP() / Raw(b"xdpsec"), "pass", "pass-other")
    add(eth / v4 / TCP(sport=40000, dport=443, flags="S"), "pass", "pass-other")
    add(eth / v4 / UDP(sport=40000, dport=53) / Raw(b"q"), "pass", "pass-other")
    add(eth / v6 / ICMPv6EchoRequest(), "pass", "pass-other")
    add(Ether(src=src_mac, dst=dst_mac) / ARP(psrc=TX4, pdst=RX4, hwsrc=src_mac), "pass", "pass-other")
    return out


def otherhost(frame):
    """Whether xdpsec looks at frame as IPsec (or UDP) before anything else:
    then, sent to another host's MAC, it passes as pass-otherhost."""
    from scapy.all import IP, IPv6
    if IP in frame:
        return frame[IP].proto in (50, 51, 17)
    if IPv6 in frame:
        # ESP, AH, UDP, or hop-by-hop, routing, fragment, destination options.
        return frame[IPv6].nh in (50, 51, 17, 0, 43, 44, 60)
    return False


def expectation(i, verdict, reason, spi):
    d = {"index": i, "verdict": verdict, "reason": reason}
    if spi is not None:
        d["spi"] = f"0x{spi:08x}"
    return d


def main(argv):
    if len(argv) >= 1 and argv[0] == "sas":
        print("\n".join(SAS))
        return 0
    if len(argv) == 3 and argv[0] == "pcap":
        from scapy.all import wrpcap
        pkts = packets()
        wrpcap(argv[1], [p[0] for p in pkts])
        with open(argv[2], "w") as f:
            for i, (_, verdict, reason, spi) in enumerate(pkts):
                f.write(json.dumps(expectation(i, verdict, reason, spi), separators=(",", ":")) + "\n")
        return 0
    if len(argv) in (3, 4) and argv[0] in ("send", "send-otherhost"):
        iface, dst_mac = argv[1], argv[2]
        n = int(argv[3]) if len(argv) == 4 else 1
        from scapy.all import sendp
        src_mac = open(f"/sys/class/net/{iface}/address").read().strip()
        pkts = packets(src_mac, dst_mac)
        sendp([p[0] for p in pkts] * n, iface=iface, verbose=False)
        counts = {}
        for frame, _, reason, _ in pkts:
            if argv[0] == "send-otherhost" and otherhost(frame):
                reason = "pass-otherhost"
            counts[reason] = counts.get(reason, 0) + n
        print(json.dumps(counts, sort_keys=True))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
