#!/usr/bin/python3
"""scapy side of xdpsec's AH-over-IPv6-with-a-Routing-header interop test
(ah_rthdr_test.go), run with Debian's /usr/bin/python3 (scapy 2.5).

  scapy_ah_rthdr.py gen   CASE.json DIR   writes DIR/plain.pcap (IPv6 UDP
        packets with a type 0 Routing header, Segments Left = its number of
        addresses), scapy's AH transport encryption of them as sent
        (DIR/scapy-hop0.pcap), after each hop of their route
        (DIR/scapy-hopN.pcap) and with one address of the route changed
        (DIR/scapy-tampered.pcap); prints {"sha256": [UDP segment sha256...]}
  scapy_ah_rthdr.py check CASE.json DIR   reads xdpsec's DIR/xdpsec.pcap,
        checks it went on the wire unrearranged, routes it to its final
        destination and has scapy verify and decrypt it there; prints
        {"verified": N, "errors": [...]}

scapy computes the sender's ICV over the Routing header as it will be at
the final destination (zero_mutable_fields(sending=True)) but verifies a
received packet as it is (sending=False), which is right only where the
route ends: so the check routes xdpsec's packets first. The routing here
is RFC 2460 §4.4's per-node rule, applied hop by hop.
"""
import hashlib
import json
import os
import sys

from scapy.all import (UDP, Ether, IPv6, IPv6ExtHdrRouting, Raw, raw, rdpcap,
                       wrpcap)
from scapy.layers.ipsec import AH, IPSecIntegrityError, SecurityAssociation

MAC_A, MAC_B = '02:00:00:00:00:0a', '02:00:00:00:00:0b'


def make_sa(c):
    return SecurityAssociation(AH, spi=c['spi'], auth_algo=c['auth'],
                               auth_key=bytes.fromhex(c['auth_key']))


def route(pkt, hops):
    """The packet after `hops` nodes processed its Routing header: each
    swaps the destination with address n - SegmentsLeft + 1 (1-based),
    decrements Segments Left and, forwarding, the hop limit."""
    p = IPv6(raw(pkt))
    rh = p[IPv6ExtHdrRouting]
    for _ in range(hops):
        if rh.segleft == 0:
            break
        addrs = list(rh.addresses)
        i = len(addrs) - rh.segleft
        addrs[i], p.dst = p.dst, addrs[i]
        rh.addresses = addrs
        rh.segleft -= 1
        p.hlim -= 1
    return IPv6(raw(p))


def plain_packets(c):
    hops = c['hops']  # the first is the destination, the rest the route
    out = []
    for i in range(c['count']):
        p = (IPv6(src=c['src'], dst=hops[0], hlim=64, tc=0x28, fl=0xbeef) /
             IPv6ExtHdrRouting(type=0, addresses=hops[1:], segleft=len(hops) - 1) /
             UDP(sport=1234 + i, dport=5678) / Raw(bytes(range(i, i + 40))))
        out.append(IPv6(raw(p)))
    return out


def udp_sha(p):
    return hashlib.sha256(raw(p[UDP])).hexdigest()


def gen(c, d):
    sa = make_sa(c)
    plain = plain_packets(c)
    nhops = len(c['hops']) - 1
    forms = {h: [] for h in range(nhops + 1)}
    tampered = []
    for i, p in enumerate(plain):
        sa.seq_num = c['seq'] + i
        e = IPv6(raw(sa.encrypt(p)))
        for h in forms:
            forms[h].append(Ether(src=MAC_A, dst=MAC_B) / route(e, h))
        t = IPv6(raw(e))
        addrs = list(t[IPv6ExtHdrRouting].addresses)
        addrs[-1] = addrs[-1][:-1] + ('0' if addrs[-1][-1] != '0' else '1')
        t[IPv6ExtHdrRouting].addresses = addrs
        tampered.append(Ether(src=MAC_A, dst=MAC_B) / IPv6(raw(t)))
    wrpcap(os.path.join(d, 'plain.pcap'), [Ether(src=MAC_A, dst=MAC_B) / p for p in plain])
    for h, pkts in forms.items():
        wrpcap(os.path.join(d, 'scapy-hop%d.pcap' % h), pkts)
    wrpcap(os.path.join(d, 'scapy-tampered.pcap'), tampered)
    json.dump({'sha256': [udp_sha(p) for p in plain]}, sys.stdout)


def check(c, d):
    sa = make_sa(c)
    errs = []
    verified = 0
    plain = plain_packets(c)
    got = rdpcap(os.path.join(d, 'xdpsec.pcap'))
    if len(got) != len(plain):
        errs.append('%d packets from xdpsec, %d plain' % (len(got), len(plain)))
    for i, (g, p) in enumerate(zip(got, plain)):
        e = IPv6(raw(g[IPv6]))
        if AH not in e or IPv6ExtHdrRouting not in e:
            errs.append('#%d: no AH or no routing header: %r' % (i, e))
            continue
        rh = e[IPv6ExtHdrRouting]
        if e.dst != p.dst or rh.segleft != p[IPv6ExtHdrRouting].segleft or \
                list(rh.addresses) != list(p[IPv6ExtHdrRouting].addresses):
            errs.append('#%d: route rearranged on the wire: dst %s segleft %d %s' %
                        (i, e.dst, rh.segleft, rh.addresses))
        if rh.nh != 51:
            errs.append('#%d: AH not right after the routing header (nh %d)' % (i, rh.nh))
        if e[AH].seq != c['seq'] + i:
            errs.append('#%d: seq %d, want %d' % (i, e[AH].seq, c['seq'] + i))
        # Verified as it left the sender, the ICV must NOT match: it covers
        # the final form, not this one (the routing header matters).
        try:
            sa.decrypt(IPv6(raw(e)))
            errs.append('#%d: ICV verifies over the unrouted packet' % i)
        except IPSecIntegrityError:
            pass
        final = route(e, len(c['hops']) - 1)
        try:
            dec = IPv6(raw(sa.decrypt(final)))
        except IPSecIntegrityError as err:
            errs.append('#%d: at the final destination: %s' % (i, err))
            continue
        want = route(p, len(c['hops']) - 1)
        if raw(dec[UDP]) != raw(p[UDP]) or dec.dst != want.dst or \
                list(dec[IPv6ExtHdrRouting].addresses) != list(want[IPv6ExtHdrRouting].addresses):
            errs.append('#%d: decrypted %r, want %r' % (i, dec, want))
            continue
        verified += 1
    json.dump({'verified': verified, 'errors': errs}, sys.stdout)


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ('gen', 'check'):
        sys.exit(__doc__)
    with open(sys.argv[2]) as f:
        c = json.load(f)
    (gen if sys.argv[1] == 'gen' else check)(c, sys.argv[3])


if __name__ == '__main__':
    main()
