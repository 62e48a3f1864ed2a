#!/usr/bin/python3
"""Send one flow of UDP datagrams inside tunnel-mode ESP (AES-GCM, RFC 4106)
from a layer-2 socket, protected by scapy: an independent sender for
multiqueue_test.go (run with Debian's /usr/bin/python3 inside the sender's
namespace, pinned to one CPU so that XPS picks the veth's tx queue).

It reads one JSON object on stdin (the key travels there, never in argv):

  iface, mac_src, mac_dst      the link, its MAC and the receiver's MAC
  outer_src, outer_dst         the SA's IPv4 addresses
  spi, key                     the SA: SPI and xfrm's key+salt in hex
  inner_src, inner_dst         the inner IPv4 packet's addresses
  sport, dport                 the inner UDP ports
  count, size                  datagrams to send, UDP payload bytes

Sequence numbers run 1..count. Every frame is built before the first is sent;
sending is paced (16 frames, then 2 ms) so no ring on the way overflows. It
prints {"sent": N, "cpus": [the CPUs it may run on]} and exits 0.
"""
import json
import os
import sys
import time

from scapy.all import IP, UDP, Ether, Raw, conf, raw
from scapy.layers.ipsec import ESP, SecurityAssociation


def main():
    c = json.load(sys.stdin)
    sa = SecurityAssociation(
        ESP, spi=c['spi'], crypt_algo='AES-GCM', crypt_key=bytes.fromhex(c['key']),
        crypt_icv_size=16, tunnel_header=IP(src=c['outer_src'], dst=c['outer_dst'], ttl=64))
    payload = bytes(range(256)) * (c['size'] // 256 + 1)
    frames = []
    for seq in range(1, c['count'] + 1):
        inner = IP(src=c['inner_src'], dst=c['inner_dst'], ttl=64) / \
            UDP(sport=c['sport'], dport=c['dport']) / Raw(payload[:c['size']])
        inner = inner.__class__(raw(inner))
        sa.seq_num = seq
        outer = sa.encrypt(inner)
        frames.append(raw(Ether(src=c['mac_src'], dst=c['mac_dst']) / outer))
    sock = conf.L2socket(iface=c['iface'])
    try:
        for i, f in enumerate(frames):
            sock.send(f)
            if i % 16 == 15:
                time.sleep(0.002)
    finally:
        sock.close()
    print(json.dumps({"sent": len(frames), "cpus": sorted(os.sched_getaffinity(0))}))


if __name__ == '__main__':
    main()
