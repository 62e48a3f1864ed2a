#!/usr/bin/python3
"""A live scapy IPsec peer for xdpsec (run by livepeer_test.go with Debian's
/usr/bin/python3 inside the peer namespace; scapy 2.5, python3-cryptography).

It reads one case as JSON on stdin (keys travel there, never in argv):

  iface, mac_src, mac_dst       the peer's link, its MAC and xdpsec's MAC
  outer, inner                  4 or 6
  inner_src, inner_dst          the inner echo request's addresses
  out, in                       the SAs, peer->xdpsec and xdpsec->peer: proto
                                (esp, ah), spi, src, dst, crypt, crypt_key, icv, auth,
                                auth_key (scapy names, hex keys with xfrm's
                                trailing salt), natt [sport, dport] or null
  count, timeout                echo requests to send, seconds to wait for
                                each reply
  esn, seq_out, seq_in          extended sequence numbers on both SAs; the
                                64-bit sequence number of the peer's first
                                packet and of xdpsec's first reply
  bad                           then also send two packets xdpsec must drop:
                                the first request again (a replay) and a
                                fresh one with its last byte flipped (the
                                ICV for ESP, ICV-covered payload for AH)

For each of `count` echo requests (one at a time) it protects the request
with scapy (ESP or AH), sends it over the link with a layer-2 socket, waits
(bounded) for a frame from xdpsec's MAC with the inbound SPI, decrypts
(ESP) or verifies (AH) it with scapy and checks it is the echo reply with
the same id, sequence and payload. It prints one JSON object:

  {"sent": N, "replies": K, "errors": [...], "seqs": [...], "bad_sent": B}

and exits 0 (the Go test judges). It also checks what scapy does not: the
ESP trailer (padding, alignment, next header) and the outer checksums.
scapy 2.5 quirks are worked around, each where it bites: the NAT-T UDP
length (left at 8), ESP-in-UDP decryption (scapy expects ESP right after
the IP header), AH tunnel mode's inner packet (returned as Raw), sequence
number and ESN high half 0 (taken as "not given"), and the ESN high bits
missing from non-AEAD ESP's ICV.
"""
import hmac
import json
import os
import select
import struct
import sys
import time

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from scapy.all import (ICMP, IP, UDP, Ether, ICMPv6EchoReply,
                       ICMPv6EchoRequest, IPv6, Raw, conf, raw)
from scapy.layers.ipsec import AH, ESP, IPSecIntegrityError, SecurityAssociation

ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86dd


def make_sa(s, c):
    outer = c['outer']
    tunnel = IP(src=s['src'], dst=s['dst'], ttl=64) if outer == 4 else \
        IPv6(src=s['src'], dst=s['dst'], hlim=64)
    natt = UDP(sport=s['natt'][0], dport=s['natt'][1]) if s.get('natt') else None
    proto = ESP if s['proto'] == 'esp' else AH
    return SecurityAssociation(
        proto, spi=s['spi'], crypt_algo=s.get('crypt') if proto is ESP else None,
        crypt_key=bytes.fromhex(s['crypt_key']) if s.get('crypt_key') else None,
        crypt_icv_size=s.get('icv') or None,
        auth_algo=s.get('auth'),
        auth_key=bytes.fromhex(s['auth_key']) if s.get('auth_key') else None,
        tunnel_header=tunnel, nat_t_header=natt, esn_en=bool(c.get('esn')))


def non_aead_esp_esn(sa, c):
    return c.get('esn') and sa.proto is ESP and not sa.crypt_algo.is_aead


def esn_icv(sa, esp, hi):
    """Quirk: scapy 2.5 leaves the high ESN bits out of the ICV of non-AEAD
    ESP (it hashes only the ESP packet); RFC 4303 §2.2.1 appends them to the
    authenticated data. The ICV computed that way."""
    n = sa.auth_algo.icv_size
    return hmac.new(sa.auth_key, raw(esp)[:-n] + struct.pack('!L', hi),
                    sa.auth_algo.digestmod.name).digest()[:n]


def echo_request(c, ident, seq, payload):
    if c['inner'] == 4:
        p = IP(src=c['inner_src'], dst=c['inner_dst'], ttl=64) / \
            ICMP(type=8, id=ident, seq=seq) / Raw(payload)
    else:
        p = IPv6(src=c['inner_src'], dst=c['inner_dst'], hlim=64) / \
            ICMPv6EchoRequest(id=ident, seq=seq, data=payload)
    return p.__class__(raw(p))


def encrypt(sa, c, inner, seq):
    """inner protected by sa with the 64-bit sequence number seq."""
    # Quirk: scapy takes seq_num=0 as "not given" (seq_num or
    # self.seq_num), and esn=0 likewise: set the SA's counters instead.
    sa.seq_num, sa.esn = seq & 0xffffffff, seq >> 32
    e = sa.encrypt(inner)
    if non_aead_esp_esn(sa, c):
        n = sa.auth_algo.icv_size
        e[ESP].data = e[ESP].data[:-n] + esn_icv(sa, e[ESP], seq >> 32)
    if c['out'].get('natt'):
        # Quirk: scapy 2.5 leaves the NAT-T UDP length at 8. Checksum 0 is
        # what RFC 3948 §2.1 allows for IPv4; for IPv6 let scapy compute it.
        e[UDP].len = 8 + len(raw(e[ESP]))
        if c['outer'] == 4:
            e[UDP].chksum = 0
        else:
            del e[UDP].chksum
    return e.__class__(raw(e))


def strip_natt(ipp, outer):
    """RFC 3948 §3.2 receiver processing: take the UDP header out so that
    ESP follows the IP header, as scapy's decrypt expects."""
    esp_bytes = raw(ipp[UDP].payload)
    ipp = ipp.__class__(raw(ipp))
    ipp[UDP].underlayer.remove_payload()
    if outer == 4:
        ipp.proto, ipp.len, ipp.chksum = 50, None, None
    else:
        ipp.nh, ipp.plen = 50, None
    return ipp.__class__(raw(ipp / ESP(esp_bytes)))


def tampered(c, req):
    """req with the last byte of its IP packet flipped (IPv6 NAT-T: UDP
    checksum recomputed, so that only the ICV check can refuse it)."""
    b = bytearray(raw(req))
    b[-1] ^= 0x01
    p = req.__class__(bytes(b))
    if c['out'].get('natt') and c['outer'] == 6:
        del p[UDP].chksum
        p = p.__class__(raw(p))
    return p


def outer_of(frame, c):
    """The outer IP packet of an Ethernet frame from xdpsec carrying the
    inbound SA's ESP (plain or in UDP) or AH, or None."""
    eth = Ether(frame)
    if eth.src.lower() != c['mac_dst'].lower():
        return None
    want = IP if c['outer'] == 4 else IPv6
    if not isinstance(eth.payload, want):
        return None
    ipp = eth.payload
    s = c['in']
    if (ipp.src, ipp.dst) != (s['src'], s['dst']):
        return None
    if s.get('natt'):
        if UDP not in ipp or (ipp[UDP].sport, ipp[UDP].dport) != tuple(s['natt']):
            return None
        body = raw(ipp[UDP].payload)
    else:
        nh = ipp.proto if c['outer'] == 4 else ipp.nh
        if nh != (50 if s['proto'] == 'esp' else 51):
            return None
        body = raw(ipp.payload)
    spi_at = 0 if s['proto'] == 'esp' else 4  # AH: next header, length, reserved
    if len(body) < spi_at + 8 or int.from_bytes(body[spi_at:spi_at + 4], 'big') != s['spi']:
        return None
    return ipp


def esp_trailer_errors(c, sa, esp, hi):
    """Checks what scapy does not (quirk: its decrypt ignores the padding
    bytes): the ESP trailer of xdpsec's packet. RFC 4303 §2.4: padding
    1, 2, 3, ...; the payload, padding, pad length and next header fill
    whole cipher blocks (4-byte aligned for AEADs); next header is the
    inner family (4 IPIP, 41 IPv6) in tunnel mode."""
    s = c['in']
    key = bytes.fromhex(s['crypt_key'])
    if s['crypt'] in ('AES-GCM', 'CHACHA20-POLY1305'):
        aead = AESGCM(key[:-4]) if s['crypt'] == 'AES-GCM' else ChaCha20Poly1305(key[:-4])
        iv, body = esp.data[:8], esp.data[8:]
        aad = struct.pack('!LLL', esp.spi, hi, esp.seq) if c.get('esn') else \
            struct.pack('!LL', esp.spi, esp.seq)
        pt = aead.decrypt(key[-4:] + iv, body, aad)
        align = 4
    elif s['crypt'] == 'AES-CBC':
        n = sa.auth_algo.icv_size
        iv, body = esp.data[:16], esp.data[16:len(esp.data) - n]
        dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        pt = dec.update(body) + dec.finalize()
        align = 16
    else:
        return ['no trailer check for %s' % s['crypt']]
    errs = []
    padlen, nh = pt[-2], pt[-1]
    if pt[len(pt) - 2 - padlen:-2] != bytes(range(1, padlen + 1)):
        errs.append('padding %s is not 1, 2, 3, ...' % pt[len(pt) - 2 - padlen:-2].hex())
    if len(pt) % align:
        errs.append('ESP payload+trailer is %d bytes, not a multiple of %d' % (len(pt), align))
    want = 4 if c['inner'] == 4 else 41
    if nh != want:
        errs.append('ESP next header %d, want %d' % (nh, want))
    return errs


def outer_errors(c, ipp):
    """Checks of xdpsec's outer header: the IPv4 header checksum, and the
    NAT-T UDP checksum (IPv4: 0 or right, RFC 3948 §2.1; IPv6: right and
    not 0, RFC 8200 §8.1)."""
    errs = []
    if c['outer'] == 4:
        fixed = ipp.copy()
        del fixed.chksum
        if IP(raw(fixed)).chksum != ipp.chksum:
            errs.append('outer IPv4 header checksum 0x%04x is wrong' % ipp.chksum)
    if c['in'].get('natt'):
        u = ipp[UDP]
        if u.len != 8 + len(raw(u.payload)):
            errs.append('NAT-T UDP length %d, payload %d' % (u.len, len(raw(u.payload))))
        if c['outer'] == 6 and u.chksum == 0:
            errs.append('NAT-T UDP checksum 0 over IPv6')
        if u.chksum != 0:
            fixed = ipp.copy()
            del fixed[UDP].chksum
            want = ipp.__class__(raw(fixed))[UDP].chksum
            if want != u.chksum:
                errs.append('NAT-T UDP checksum 0x%04x, want 0x%04x' % (u.chksum, want))
    return errs


def check_reply(c, dec, ident, seq, payload):
    errs = []
    if c['inner'] == 4:
        if not isinstance(dec, IP) or ICMP not in dec:
            return ['inner packet is not IPv4/ICMP: %s' % raw(dec).hex()]
        ic = dec[ICMP]
        if ic.type != 0:
            errs.append('ICMP type %d, want 0 (echo reply)' % ic.type)
    else:
        if not isinstance(dec, IPv6) or ICMPv6EchoReply not in dec:
            return ['inner packet is not an ICMPv6 echo reply: %s' % raw(dec).hex()]
        ic = dec[ICMPv6EchoReply]
    if (dec.src, dec.dst) != (c['inner_dst'], c['inner_src']):
        errs.append('inner %s -> %s, want %s -> %s' % (dec.src, dec.dst, c['inner_dst'], c['inner_src']))
    if (ic.id, ic.seq) != (ident, seq):
        errs.append('echo id/seq %d/%d, want %d/%d' % (ic.id, ic.seq, ident, seq))
    # scapy keeps an ICMPv6 echo's payload in its data field.
    got = raw(ic.payload) if c['inner'] == 4 else ic.data
    if got != payload:
        errs.append('echo payload differs: got %s want %s' % (got.hex(), payload.hex()))
    # Rebuilding recomputes checksums: equal bytes mean the received ones
    # were right.
    chk = dec.copy()
    if c['inner'] == 4:
        del chk.chksum
        del chk[ICMP].chksum
    else:
        del chk[ICMPv6EchoReply].cksum
    if raw(chk.__class__(raw(chk))) != raw(dec):
        errs.append('inner checksums wrong')
    return errs


def main():
    c = json.load(sys.stdin)
    sa_out, sa_in = make_sa(c['out'], c), make_sa(c['in'], c)
    res = {'sent': 0, 'replies': 0, 'errors': [], 'seqs': [], 'bad_sent': 0}
    layer = ESP if c['in']['proto'] == 'esp' else AH
    sock = conf.L2socket(iface=c['iface'])
    eth = Ether(src=c['mac_src'], dst=c['mac_dst'],
                type=ETH_P_IP if c['outer'] == 4 else ETH_P_IPV6)
    first = None
    try:
        ident = os.getpid() & 0xffff
        for seq in range(1, c['count'] + 1):
            # Sizes that give the ESP trailer different padding lengths,
            # up to a near-MTU packet.
            payload = os.urandom((56, 1, 1300, 7)[(seq - 1) % 4])
            req = encrypt(sa_out, c, echo_request(c, ident, seq, payload), c['seq_out'] + seq - 1)
            frame = eth / req
            first = first or frame
            sock.send(frame)
            res['sent'] += 1
            deadline = time.monotonic() + c['timeout']
            got = None
            while got is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                r, _, _ = select.select([sock], [], [], left)
                if not r:
                    break
                pkt = sock.recv_raw()
                if not pkt or pkt[1] is None:
                    continue
                got = outer_of(pkt[1], c)
            if got is None:
                res['errors'].append('echo %d: no ESP reply from xdpsec within %.1f s' % (seq, c['timeout']))
                continue
            res['errors'] += ['echo %d: %s' % (seq, e) for e in outer_errors(c, got)]
            if c['in'].get('natt'):
                got = strip_natt(got, c['outer'])
            res['seqs'].append(got[layer].seq)
            # The high half of the sequence number is not on the wire:
            # the receiver knows it (here: the reply xdpsec must send).
            hi = (c['seq_in'] + seq - 1) >> 32
            sa_in.esn = hi
            verify = True
            if non_aead_esp_esn(sa_in, c):
                n = sa_in.auth_algo.icv_size
                if raw(got[ESP])[-n:] != esn_icv(sa_in, got[ESP], hi):
                    res['errors'].append('echo %d: ICV with ESN high bits %d does not verify' % (seq, hi))
                    continue
                verify = False  # checked above; scapy would leave ESN out
            if layer is ESP:
                try:
                    res['errors'] += ['echo %d: %s' % (seq, e) for e in esp_trailer_errors(c, sa_in, got[ESP], hi)]
                except Exception as e:  # scapy's decrypt below says why
                    res['errors'].append('echo %d: trailer check: %r' % (seq, e))
            try:
                dec = sa_in.decrypt(got, verify=verify)
            except IPSecIntegrityError as e:
                res['errors'].append('echo %d: scapy: integrity check failed: %s' % (seq, e))
                continue
            except Exception as e:  # a parse failure is a finding, not a crash
                res['errors'].append('echo %d: scapy decrypt: %r' % (seq, e))
                continue
            # Quirk: scapy 2.5 returns an AH tunnel's inner IPv4 packet as
            # Raw (nothing binds AH's next header 4 to IP): parse the bytes
            # it verified.
            dec = (IP if c['inner'] == 4 else IPv6)(raw(dec))
            errs = check_reply(c, dec, ident, seq, payload)
            res['errors'] += ['echo %d: %s' % (seq, e) for e in errs]
            if not errs:
                res['replies'] += 1
        if c.get('bad') and first is not None:
            sock.send(first)
            req = encrypt(sa_out, c, echo_request(c, ident, c['count'] + 1, os.urandom(56)), c['seq_out'] + c['count'])
            sock.send(eth / tampered(c, req))
            res['bad_sent'] = 2
    finally:
        sock.close()
    json.dump(res, sys.stdout)


if __name__ == '__main__':
    main()
