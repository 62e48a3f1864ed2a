#!/usr/bin/python3
"""Send crafted ESP frames that the receiving xdpsec daemon must drop.

Usage: inject.py IFACE DST_MAC KEY_HEX SPI SEQ ROUNDS STOPFILE

KEY_HEX is the SA's AES-GCM-128 key and salt (40 hex digits, as in the
config), SPI the SA's SPI, both of the A->B direction of the test tunnel
(outer 192.0.2.1 -> 192.0.2.2, inner 198.51.100.1 -> 198.51.100.2).

Sends one valid packet with sequence number SEQ (accepted), then ROUNDS
rounds, 0.2 s apart, of: the same frame again (a replay) and a fresh
sequence number SEQ+i with its last ICV byte flipped (bad-icv). Stops early
when STOPFILE exists. Prints one JSON line: what was sent.
"""
import json
import os
import sys
import time

from scapy.all import ICMP, IP, Ether, Raw, conf, sendp
from scapy.layers.ipsec import ESP, SecurityAssociation

conf.verb = 0
iface, dst_mac, key_hex, spi, seq, rounds, stopfile = sys.argv[1:8]
spi, seq, rounds = int(spi, 0), int(seq), int(rounds)

sa = SecurityAssociation(ESP, spi=spi, crypt_algo='AES-GCM', crypt_key=bytes.fromhex(key_hex),
                         tunnel_header=IP(src='192.0.2.1', dst='192.0.2.2'))
inner = IP(src='198.51.100.1', dst='198.51.100.2') / ICMP(id=0x4242, seq=1) / Raw(b'xdpsec-ops-drop-test')
# `ip netns exec` mounts the namespace's own sysfs.
with open('/sys/class/net/%s/address' % iface) as f:
    eth = Ether(dst=dst_mac, src=f.read().strip())


def frame(n):
    return bytes(eth / sa.encrypt(inner, seq_num=n))


good = frame(seq)
sent = {'ok': [seq], 'replay': [], 'bad-icv': []}
sendp(good, iface=iface)
for i in range(1, rounds + 1):
    if os.path.exists(stopfile):
        break
    time.sleep(0.2)
    sendp(good, iface=iface)
    sent['replay'].append(seq)
    bad = bytearray(frame(seq + i))
    bad[-1] ^= 0x01
    sendp(bytes(bad), iface=iface)
    sent['bad-icv'].append(seq + i)
print(json.dumps(sent))
