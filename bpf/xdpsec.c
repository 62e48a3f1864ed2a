//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * xdpsec.c: the receive classifier. It parses L2/L3/L4 just far enough to
 * tell IPsec from everything else, looks inbound SAs up and steers packets
 * of known, enabled SAs to the AF_XDP socket of their rx queue. Everything
 * else goes to the kernel (XDP_PASS); malformed IPsec is dropped. Every
 * packet bumps exactly one reason counter. Only frames addressed to this
 * host are steered: IPsec in a unicast frame to another MAC (promiscuous
 * mode) passes to the kernel, which drops it.
 *
 * Non-IPsec traffic is decided after the EtherType and the IP protocol (and
 * the UDP destination port for UDP): no map lookup except its counter.
 */
#include "abi.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "xdpsec.h"

#define NATT_PORT 4500
#define IKE_PORT 500

char _license[] SEC("license") = "Dual BSD/GPL";

/* What this object handles; read by the loader from .rodata. */
const volatile __u32 xdpsec_features =
	XDPSEC_FEATURE_VLAN | XDPSEC_FEATURE_QINQ | XDPSEC_FEATURE_IPV4 |
	XDPSEC_FEATURE_IPV4_OPTIONS | XDPSEC_FEATURE_IPV6 |
	XDPSEC_FEATURE_IPV6_EXT | XDPSEC_FEATURE_ESP | XDPSEC_FEATURE_AH |
	XDPSEC_FEATURE_AH_ESP | XDPSEC_FEATURE_UDP_ESP |
	XDPSEC_FEATURE_IKE_PASS | XDPSEC_FEATURE_FRAGMENT_PASS |
	XDPSEC_FEATURE_STEER_XSK | XDPSEC_FEATURE_OTHERHOST_PASS;

/* Keep the shared enums in BTF so bpf2go -type finds them. */
const enum xdpsec_family *_xdpsec_family __attribute__((unused));
const enum xdpsec_class *_xdpsec_class __attribute__((unused));
const enum xdpsec_reason *_xdpsec_reason __attribute__((unused));
const enum xdpsec_feature *_xdpsec_feature __attribute__((unused));

/* Set to 1 by the loader for the classify-only (never attached) variant. */
const volatile __u8 xdpsec_record_last = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384); /* the loader may resize */
	__type(key, struct xdpsec_sa_key);
	__type(value, struct xdpsec_sa);
} xdpsec_sas SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 256); /* the loader may resize */
	__type(key, __u32);
	__type(value, __u32);
} xdpsec_xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xdpsec_config);
} xdpsec_cfg SEC(".maps");

/* The link's MAC address (struct xdpsec_lladdr); all zero: do not check. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xdpsec_lladdr);
} xdpsec_linkaddr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDPSEC_REASON_MAX);
	__type(key, __u32);
	__type(value, __u64);
} xdpsec_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xdpsec_last);
} xdpsec_lastpkt SEC(".maps");

/* Bytes of the L4 header classify_l4 may read: UDP (8) + ESP SPI/marker. */
#define L4_WINDOW 16

/*
 * Bytes after the IPv6 header copied at once for the extension header walk.
 * A power of two: offsets in the copy are masked with EXT_MASK so that the
 * verifier sees them bounded (they are multiples of 8 below EXT_WINDOW
 * already, so the mask never changes one).
 */
#define EXT_WINDOW 64
#define EXT_MASK (EXT_WINDOW - 8)

/*
 * xdpsec_scratch is per-CPU scratch memory for the IPv6 extension header
 * walk: one bpf_xdp_load_bytes() copies what follows the fixed header, and
 * the walk reads it at variable offsets, which a map value allows without
 * CAP_PERFMON (a packet pointer or the stack does not). Nothing survives a
 * packet; never pinned.
 */
struct xdpsec_scratch {
	__u8 b[EXT_WINDOW + L4_WINDOW]; /* the tail keeps masked reads in bounds */
	__u32 rel;			/* see ext_at */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xdpsec_scratch);
} xdpsec_scratch SEC(".maps");

/*
 * ext_at returns rel (a multiple of 8 below EXT_WINDOW) as an index into
 * scratch->b the verifier accepts without CAP_PERFMON. There, "map value +=
 * register" is allowed but masked against speculation, and every path
 * through one such instruction must give the register the same bounds.
 * rel's bounds differ from path to path (they follow the headers walked),
 * so it round-trips through the map value, whence the verifier knows
 * nothing of it, and is masked with EXT_MASK: [0, 56] on every path. The
 * mask never changes a valid rel; the round trip costs a store and a load.
 */
static __always_inline __u32 ext_at(struct xdpsec_scratch *scratch, __u32 rel)
{
	scratch->rel = rel;
	asm volatile("" ::: "memory"); /* reload: the verifier must see a map read */
	return scratch->rel & EXT_MASK;
}

static __always_inline int verdict(int action, __u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&xdpsec_counters, &reason);

	if (n)
		*n += 1;
	if (xdpsec_record_last) {
		__u32 zero = 0;
		struct xdpsec_last *last = bpf_map_lookup_elem(&xdpsec_lastpkt, &zero);

		if (last)
			last->reason = reason;
	}
	return action;
}

static __always_inline int pass(__u32 reason)
{
	return verdict(XDP_PASS, reason);
}

static __always_inline int drop(__u32 reason)
{
	return verdict(XDP_DROP, reason);
}

static __always_inline struct xdpsec_config *config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&xdpsec_cfg, &zero);
}

static __always_inline int is_natt_port(__u16 port)
{
	struct xdpsec_config *cfg;

	if (port == NATT_PORT)
		return 1;
	cfg = config();
	if (!cfg)
		return 0;
#pragma unroll
	for (int i = 0; i < XDPSEC_MAX_NATT_PORTS; i++)
		if (cfg->natt_ports[i] && cfg->natt_ports[i] == port)
			return 1;
	return 0;
}

/*
 * other_host says whether eth is a unicast frame addressed to another MAC
 * than the link's: what the kernel marks PACKET_OTHERHOST and ip_rcv /
 * ipv6_rcv drop. The NIC delivers such frames only in promiscuous mode
 * (tcpdump without -p, a bridge port, a macvlan lower). Group addresses
 * (broadcast, multicast: the I/G bit) are never "other host", and an
 * unset address (all zero) checks nothing. Two compares against a map
 * value the verifier inlines: no helper call.
 */
static __always_inline int other_host(const struct ethhdr *eth)
{
	const struct xdpsec_lladdr *ll;
	__u32 zero = 0, lo;
	__u16 hi;

	if (eth->h_dest[0] & 1)
		return 0;
	ll = bpf_map_lookup_elem(&xdpsec_linkaddr, &zero);
	if (!ll)
		return 0;
	lo = *(const __u32 *)&ll->addr[0];
	hi = *(const __u16 *)&ll->addr[4];
	if ((lo | hi) == 0)
		return 0;
	return *(const __u32 *)&eth->h_dest[0] != lo || *(const __u16 *)&eth->h_dest[4] != hi;
}

/*
 * WOULD_STEER is steer()'s answer for a packet of a known, enabled SA: not
 * an XDP action (those are 0-4). The IP-level caller, which alone knows the
 * header, makes the last check (the IPv4 header checksum) and calls
 * redirect(). Everything between returns it unchanged.
 */
#define WOULD_STEER 0x100

/*
 * steer looks the SA up and decides. encap_dport is 0 for ESP/AH over IP,
 * the UDP destination port for ESP-in-UDP; class is the xdpsec_class bit of
 * the packet's protocol. The key's spi_be and proto are set by the caller.
 * The SA's counters count every packet that matched its key, whatever the
 * verdict.
 */
static __always_inline int steer(struct xdpsec_sa_key *key, __u32 class, __u16 encap_dport,
				 __u32 ip_len)
{
	struct xdpsec_sa *sa = bpf_map_lookup_elem(&xdpsec_sas, key);
	struct xdpsec_config *cfg;
	__u32 need;

	if (xdpsec_record_last) {
		__u32 zero = 0;
		struct xdpsec_last *last = bpf_map_lookup_elem(&xdpsec_lastpkt, &zero);

		if (last) {
			last->looked_up = 1;
			last->key = *key;
			if (sa) {
				last->matched = 1;
				last->sa_id = sa->sa_id;
			}
		}
	}
	if (!sa)
		return pass(XDPSEC_REASON_NO_STATE);
	sa->packets += 1;
	sa->bytes += ip_len;
	if (sa->encap_dport != encap_dport)
		return pass(XDPSEC_REASON_STATE_MISMATCH);

	need = class | (key->family == XDPSEC_FAMILY_IPV4 ? XDPSEC_CLASS_IPV4 : XDPSEC_CLASS_IPV6);
	cfg = config();
	if (!cfg || (cfg->enabled & need) != need)
		return pass(XDPSEC_REASON_DISABLED_CLASS);
	return WOULD_STEER;
}

/* redirect hands the packet to its rx queue's socket. */
static __always_inline int redirect(struct xdp_md *ctx)
{
	/* A queue without a socket (or beyond the map) returns XDP_PASS: never blackhole. */
	long act = bpf_redirect_map(&xdpsec_xsks, ctx->rx_queue_index, XDP_PASS);

	if (act == XDP_REDIRECT)
		return verdict(XDP_REDIRECT, XDPSEC_REASON_STEERED);
	return verdict((int)act, XDPSEC_REASON_STEER_FALLBACK);
}

/*
 * csum_folds_to_ffff folds a sum of 32-bit words of a header (read in host
 * order: the one's-complement sum does not care, RFC 1071 §2(B)) and says
 * whether the header's checksum is right.
 */
static __always_inline int csum_folds_to_ffff(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum == 0xffff;
}

/*
 * Why there is no variable packet-pointer arithmetic below: without
 * CAP_PERFMON the verifier sanitises every "pointer += register" against
 * Spectre v1 and knows no limit for packet pointers, so it refuses them
 * ("pointer arithmetic with it prohibited for !root"). xdpsec must load with
 * CAP_BPF + CAP_NET_ADMIN alone (deploy/xdpsec.service), so every packet
 * pointer here is data plus a constant: the VLAN walk is unrolled, IPv4
 * without options and IPv6 without extension headers put L4 at a constant
 * offset. Lengths are compared as numbers against bpf_xdp_get_buff_len(),
 * and what sits at a variable offset is read with bpf_xdp_load_bytes(): the
 * L4 window after IPv4 options, the ESP SPI after AH, and one copy of what
 * follows an IPv6 header with extension headers into xdpsec_scratch, which
 * is walked there (both helpers: kernel 5.18+). Cost, measured: ~2 ns per
 * IPsec or UDP packet, ~4 ns for AH+ESP, ~11 ns for IPv6 with extension
 * headers; nothing for other traffic. The IPv4 header checksum of a packet
 * about to be steered costs ~1 ns more (five words summed in place); the
 * extension header walk as a global function (ipv6_ext_walk) ~7 ns more,
 * for a verifier that processes 62k instructions instead of 830k.
 */

/*
 * classify_l4 classifies what follows the IP header(s). hdr points at
 * L4_WINDOW readable bytes holding the start of the protocol header (bytes
 * past rem are garbage and never decide anything); l4off is the header's
 * offset from the start of the frame; rem is the number of bytes from there
 * to the end of the IP datagram as its length field says (frame padding
 * excluded), and the caller has checked that the datagram fits in the
 * frame, so rem alone bounds every read.
 */
static __always_inline int classify_l4(struct xdp_md *ctx, struct xdpsec_sa_key *key,
				       __u8 proto, const void *hdr, __u32 l4off, __u32 rem,
				       __u32 ip_len)
{
	if (proto == IPPROTO_ESP) {
		const struct ip_esp_hdr *esp = hdr;

		if (rem < sizeof(*esp))
			return drop(XDPSEC_REASON_MALFORMED_ESP);
		if (esp->spi == 0)
			return drop(XDPSEC_REASON_MALFORMED_ESP);
		key->spi_be = esp->spi;
		key->proto = IPPROTO_ESP;
		return steer(key, XDPSEC_CLASS_ESP, 0, ip_len);
	}

	if (proto == IPPROTO_AH) {
		const struct ip_auth_hdr *ah = hdr;
		__u32 ah_len;

		if (rem < sizeof(*ah))
			return drop(XDPSEC_REASON_MALFORMED_AH);
		ah_len = ((__u32)ah->hdrlen + 2) * 4;
		if (ah_len < sizeof(*ah) || ah_len > rem)
			return drop(XDPSEC_REASON_MALFORMED_AH);
		/* RFC 4302 §2.2: a multiple of 64 bits over IPv6. */
		if (key->family == XDPSEC_FAMILY_IPV6 && (ah_len & 7))
			return drop(XDPSEC_REASON_MALFORMED_AH);
		if (ah->spi == 0)
			return drop(XDPSEC_REASON_MALFORMED_AH);
		if (ah->nexthdr == IPPROTO_ESP) {
			__be32 spi;

			if (rem - ah_len < sizeof(struct ip_esp_hdr))
				return drop(XDPSEC_REASON_MALFORMED_ESP);
			/* Inside the datagram, so inside the frame: cannot fail. */
			if (bpf_xdp_load_bytes(ctx, l4off + ah_len, &spi, sizeof(spi)))
				return drop(XDPSEC_REASON_MALFORMED_ESP);
			if (spi == 0)
				return drop(XDPSEC_REASON_MALFORMED_ESP);
		}
		/* AH is processed first: its SA decides. */
		key->spi_be = ah->spi;
		key->proto = IPPROTO_AH;
		return steer(key, XDPSEC_CLASS_AH, 0, ip_len);
	}

	if (proto == IPPROTO_UDP) {
		const struct udphdr *udp = hdr;
		const __u8 *payload = hdr + sizeof(*udp);
		__u16 dport, ulen;
		__u32 plen;

		if (rem < 4)
			return pass(XDPSEC_REASON_PASS_UNPARSED);
		dport = bpf_ntohs(udp->dest);
		if (dport == IKE_PORT)
			return pass(XDPSEC_REASON_PASS_IKE);
		if (!is_natt_port(dport))
			return pass(XDPSEC_REASON_PASS_OTHER);

		/* RFC 3948 §2: the UDP length decides, not the frame. */
		if (rem < sizeof(*udp))
			return drop(XDPSEC_REASON_MALFORMED_UDP);
		ulen = bpf_ntohs(udp->len);
		if (ulen < sizeof(*udp) || ulen > rem)
			return drop(XDPSEC_REASON_MALFORMED_UDP);
		plen = ulen - sizeof(*udp);
		if (plen == 1 && payload[0] == 0xff)
			return pass(XDPSEC_REASON_PASS_KEEPALIVE);
		/*
		 * The kernel's rule (xfrm4/xfrm6_udp_encap_rcv): ESP is more than
		 * an ESP header's 8 bytes with a non-zero first word; everything
		 * else (the non-ESP marker, or too short to be ESP) goes to the
		 * IKE daemon's socket. Do the same: not ours to drop.
		 */
		if (plen <= sizeof(struct ip_esp_hdr) || *(const __u32 *)payload == 0)
			return pass(XDPSEC_REASON_PASS_IKE);
		/*
		 * RFC 8200 §8.1: a zero UDP checksum is invalid over IPv6; the
		 * kernel drops it unless the socket opted in (UDP_NO_CHECK6_RX,
		 * RFC 6936), which only the kernel knows.
		 */
		if (key->family == XDPSEC_FAMILY_IPV6 && udp->check == 0)
			return pass(XDPSEC_REASON_PASS_UNPARSED);
		key->spi_be = *(const __be32 *)payload;
		key->proto = IPPROTO_ESP;
		return steer(key, XDPSEC_CLASS_UDP_ESP, dport, ip_len);
	}

	return pass(XDPSEC_REASON_PASS_OTHER);
}

/*
 * classify_l4_copied classifies an L4 header at a variable offset: it copies
 * the window to the stack first (the rare shapes: IPv4 options, IPv6
 * extension headers past the scratch window, datagrams shorter than the
 * window). key->proto holds the L4 protocol on entry. A subprogram, not
 * inlined: its four callers would otherwise each carry a copy of
 * classify_l4, and the fast paths' code would spread over more cache lines.
 */
static __noinline int classify_l4_copied(struct xdp_md *ctx, struct xdpsec_sa_key *key,
					 __u32 l4off, __u32 rem, __u32 ip_len)
{
	__u64 win[L4_WINDOW / 8] = {}; /* 8-aligned: stack reads must be aligned */
	__u64 n = rem < L4_WINDOW ? rem : L4_WINDOW;

	/* Test n itself, not rem: the verifier must see 1 <= n <= 16. */
	asm volatile("" : "+r"(n));
	if (n > 0 && bpf_xdp_load_bytes(ctx, l4off, win, n))
		return pass(XDPSEC_REASON_PASS_UNPARSED);
	return classify_l4(ctx, key, key->proto, win, l4off, rem, ip_len);
}

/*
 * classify_l4_at classifies an L4 header at l4, data plus a constant: in
 * place when the window fits in the frame (every packet of real size), else
 * from a copy.
 */
static __always_inline int classify_l4_at(struct xdp_md *ctx, struct xdpsec_sa_key *key,
					  __u8 proto, void *l4, void *end, __u32 l4off,
					  __u32 rem, __u32 ip_len)
{
	if (l4 + L4_WINDOW <= end)
		return classify_l4(ctx, key, proto, l4, l4off, rem, ip_len);
	key->proto = proto;
	return classify_l4_copied(ctx, key, l4off, rem, ip_len);
}

static __always_inline int interesting_l4(__u8 proto)
{
	return proto == IPPROTO_ESP || proto == IPPROTO_AH || proto == IPPROTO_UDP;
}

/* frame_len is the frame's length: the number that packet pointers differ by. */
static __always_inline __u32 frame_len(struct xdp_md *ctx)
{
	return (__u32)bpf_xdp_get_buff_len(ctx);
}

/*
 * ipv4_options_csum_ok checks the checksum of an IPv4 header of hlen bytes
 * (20 < hlen <= 60, options present) at l3off, from a copy: the rare shape.
 */
static __noinline int ipv4_options_csum_ok(struct xdp_md *ctx, __u32 l3off, __u32 hlen)
{
	__u32 w[15] = {}; /* 60 bytes, the longest header; zeros add nothing */
	__u64 sum = 0, n = hlen;

	asm volatile("" : "+r"(n)); /* the verifier must see n itself bounded */
	if (n < 20 || n > sizeof(w))
		return 0;
	if (bpf_xdp_load_bytes(ctx, l3off, w, n))
		return 0;
#pragma unroll
	for (int i = 0; i < 15; i++)
		sum += w[i];
	return csum_folds_to_ffff(sum);
}

/*
 * classify_ipv4: l3 is data + l3off, l3off a constant on every verifier
 * path. The header checksum is checked only for a packet about to be
 * steered (RFC 1122 §3.2.1.2: a host MUST verify it, and the socket takes
 * the kernel's place); everything else goes to the kernel, which checks.
 * ESP, AH and UDP in a frame for another host pass before anything else
 * is looked at (fragments included): the kernel drops them, and no SA
 * counts them.
 */
static __always_inline int classify_ipv4(struct xdp_md *ctx, const struct ethhdr *eth, void *l3,
					 __u32 l3off, void *end)
{
	struct iphdr *ip = l3;
	struct xdpsec_sa_key key;
	__u32 hlen, tot;
	int rc;

	if ((void *)(ip + 1) > end)
		return pass(XDPSEC_REASON_PASS_UNPARSED);
	if (interesting_l4(ip->protocol) && other_host(eth))
		return pass(XDPSEC_REASON_PASS_OTHERHOST);
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return pass(XDPSEC_REASON_PASS_FRAGMENT);
	if (!interesting_l4(ip->protocol))
		return pass(XDPSEC_REASON_PASS_OTHER);

	hlen = (ip->ver_ihl & 0x0f) * 4;
	tot = bpf_ntohs(ip->tot_len);
	/* l3off + sizeof(*ip) <= frame_len: no underflow. */
	if ((ip->ver_ihl >> 4) != 4 || hlen < sizeof(*ip) || tot < hlen ||
	    tot > frame_len(ctx) - l3off)
		return pass(XDPSEC_REASON_PASS_UNPARSED);

	__builtin_memset(&key, 0, sizeof(key));
	__builtin_memcpy(key.daddr, &ip->daddr, 4);
	key.family = XDPSEC_FAMILY_IPV4;
	if (hlen == sizeof(*ip)) {
		const __u32 *w = l3;

		rc = classify_l4_at(ctx, &key, ip->protocol, l3 + sizeof(*ip), end,
				    l3off + sizeof(*ip), tot - hlen, tot);
		if (rc != WOULD_STEER)
			return rc;
		if (!csum_folds_to_ffff((__u64)w[0] + w[1] + w[2] + w[3] + w[4]))
			return pass(XDPSEC_REASON_PASS_UNPARSED);
		return redirect(ctx);
	}
	key.proto = ip->protocol;
	rc = classify_l4_copied(ctx, &key, l3off + hlen, tot - hlen, tot);
	if (rc != WOULD_STEER)
		return rc;
	if (!ipv4_options_csum_ok(ctx, l3off, hlen))
		return pass(XDPSEC_REASON_PASS_UNPARSED);
	return redirect(ctx);
}

/* The extension headers the walk crosses (RFC 8200 §4). */
static __always_inline int is_ipv6_ext(__u8 nh)
{
	return nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS ||
	       nh == IPPROTO_FRAGMENT;
}

/*
 * RFC 8200 §4.5: a fragment header's offset (13 bits) and M flag, bytes 2-3
 * big endian, as they lie in a little-endian word of bytes 0-3 (bpfel is
 * the only target). Neither set: an atomic fragment (RFC 6946).
 */
#define FRAG_OFFSET_M_WORD 0xf9ff0000

/* WALK_PASS encodes a reason in ipv6_ext_walk's answer. */
#define WALK_PASS(reason) (-1 - (int)(reason))

/*
 * ipv6_ext_walk walks the extension headers of the IPv6 datagram at l3off
 * (tot bytes long by its header) whose first header is nh, copying the
 * first EXT_WINDOW bytes after the fixed header into xdpsec_scratch (the
 * caller may read the L4 header there). It crosses at most
 * XDPSEC_MAX_IPV6_EXT_HDRS headers: hop-by-hop (first only, as RFC 8200
 * §4.1 and the kernel require), routing with segments left 0 (the packet
 * has reached its destination; otherwise the kernel forwards it),
 * destination options, and atomic fragment headers (offset 0, M 0: RFC
 * 6946, processed in isolation); a true fragment goes to the kernel.
 *
 * It answers (off << 8) | next, off being where the first header after the
 * chain starts (from the IPv6 header, <= tot) and next its protocol, or
 * WALK_PASS(reason) to pass the packet.
 *
 * A global function: the verifier checks it once, knowing nothing of its
 * arguments, instead of once per path into it. Inlined, the walk's
 * branches times the callers' paths took the verifier past its million
 * instructions without CAP_PERFMON (speculative paths are explored too).
 */
__noinline int ipv6_ext_walk(struct xdp_md *ctx, __u32 l3off, __u32 tot, __u32 nh)
{
	struct xdpsec_scratch *scratch;
	__u32 off = sizeof(struct ipv6hdr), zero = 0;
	__u64 copied;

	if (tot < sizeof(struct ipv6hdr) || tot > sizeof(struct ipv6hdr) + 0xffff)
		return WALK_PASS(XDPSEC_REASON_PASS_UNPARSED);
	scratch = bpf_map_lookup_elem(&xdpsec_scratch, &zero);
	if (!scratch)
		return WALK_PASS(XDPSEC_REASON_PASS_UNPARSED);
	copied = tot - off < EXT_WINDOW ? tot - off : EXT_WINDOW;
	asm volatile("" : "+r"(copied)); /* the verifier must see copied itself */
	if (copied < 8) /* not even one extension header (a jumbogram's payload length is 0) */
		return WALK_PASS(XDPSEC_REASON_PASS_UNPARSED);
	if (bpf_xdp_load_bytes(ctx, l3off + off, scratch->b, copied))
		return WALK_PASS(XDPSEC_REASON_PASS_UNPARSED);
	nh &= 0xff;

#pragma unroll
	for (int i = 0; i < XDPSEC_MAX_IPV6_EXT_HDRS; i++) {
		__u32 rel = off - sizeof(struct ipv6hdr);
		/* Bytes 0-3 of the header as they sit in memory: next header,
		 * length, then routing type and segments left (routing) or the
		 * offset and M flag (fragment). Read as one word. */
		__u32 head, len;

		if (!is_ipv6_ext(nh))
			break;
		/* Hop-by-hop elsewhere than first: the kernel drops it. And
		 * off + 8 <= tot <= frame, so the load below cannot fail. */
		if ((i > 0 && nh == IPPROTO_HOPOPTS) || off + 8 > tot)
			return WALK_PASS(XDPSEC_REASON_PASS_UNPARSED);
		if (rel + sizeof(head) <= copied && rel <= EXT_WINDOW - 8) {
			head = *(__u32 *)&scratch->b[ext_at(scratch, rel)]; /* rel is 8-aligned */
		} else if (bpf_xdp_load_bytes(ctx, l3off + off, &head, sizeof(head))) {
			return WALK_PASS(XDPSEC_REASON_PASS_UNPARSED);
		}
		len = (((head >> 8) & 0xff) + 1) * 8;
		if (nh == IPPROTO_FRAGMENT) {
			if (head & FRAG_OFFSET_M_WORD)
				return WALK_PASS(XDPSEC_REASON_PASS_FRAGMENT);
			len = 8; /* the length byte is reserved */
		} else if (nh == IPPROTO_ROUTING && (head >> 24)) {
			return WALK_PASS(XDPSEC_REASON_PASS_OTHER); /* segments left: in transit */
		}
		nh = head & 0xff;
		off += len;
	}
	if (is_ipv6_ext(nh) || off > tot)
		return WALK_PASS(XDPSEC_REASON_PASS_UNPARSED);
	return (int)(off << 8 | nh);
}

/*
 * classify_ipv6: as classify_ipv4; a frame for another host passes once its
 * first next header says ESP, AH, UDP or an extension header.
 */
static __always_inline int classify_ipv6(struct xdp_md *ctx, const struct ethhdr *eth, void *l3,
					 __u32 l3off, void *end)
{
	struct ipv6hdr *ip6 = l3;
	struct xdpsec_scratch *scratch;
	struct xdpsec_sa_key key;
	__u32 off, tot, rel, zero;
	__u64 copied;
	__u8 nh;
	int rc;

	if ((void *)(ip6 + 1) > end)
		return pass(XDPSEC_REASON_PASS_UNPARSED);
	nh = ip6->nexthdr;
	if (!interesting_l4(nh) && !is_ipv6_ext(nh))
		return pass(XDPSEC_REASON_PASS_OTHER);
	if (other_host(eth))
		return pass(XDPSEC_REASON_PASS_OTHERHOST);

	tot = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
	/* l3off + sizeof(*ip6) <= frame_len: no underflow. */
	if (tot > frame_len(ctx) - l3off)
		return pass(XDPSEC_REASON_PASS_UNPARSED);

	__builtin_memset(&key, 0, sizeof(key));
	__builtin_memcpy(key.daddr, ip6->daddr, 16);
	key.family = XDPSEC_FAMILY_IPV6;
	if (!is_ipv6_ext(nh)) { /* the common case: L4 right after the header */
		rc = classify_l4_at(ctx, &key, nh, l3 + sizeof(*ip6), end,
				    l3off + sizeof(*ip6), tot - sizeof(*ip6), tot);
		return rc == WOULD_STEER ? redirect(ctx) : rc;
	}

	rc = ipv6_ext_walk(ctx, l3off, tot, nh);
	if (rc < 0) {
		__u32 why = (__u32)(-1 - rc);

		return pass(why < XDPSEC_REASON_MAX ? why : XDPSEC_REASON_PASS_UNPARSED);
	}
	off = (__u32)rc >> 8;
	nh = rc & 0xff;
	if (off > tot || off < sizeof(*ip6))
		return pass(XDPSEC_REASON_PASS_UNPARSED);
	if (!interesting_l4(nh))
		return pass(XDPSEC_REASON_PASS_OTHER);
	zero = 0;
	scratch = bpf_map_lookup_elem(&xdpsec_scratch, &zero);
	if (!scratch)
		return pass(XDPSEC_REASON_PASS_UNPARSED);
	copied = tot - sizeof(*ip6) < EXT_WINDOW ? tot - sizeof(*ip6) : EXT_WINDOW;
	rel = off - sizeof(*ip6);
	if (rel + L4_WINDOW <= copied && rel <= EXT_WINDOW - L4_WINDOW) {
		rc = classify_l4(ctx, &key, nh, &scratch->b[ext_at(scratch, rel)], l3off + off,
				 tot - off, tot);
	} else {
		key.proto = nh;
		rc = classify_l4_copied(ctx, &key, l3off + off, tot - off, tot);
	}
	return rc == WOULD_STEER ? redirect(ctx) : rc;
}

SEC("xdp")
int xdpsec_classify(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *l3 = data + sizeof(*eth);
	__u32 l3off = sizeof(*eth);
	__be16 proto;

	if (xdpsec_record_last) {
		__u32 zero = 0;
		struct xdpsec_last *last = bpf_map_lookup_elem(&xdpsec_lastpkt, &zero);

		if (last)
			__builtin_memset(last, 0, sizeof(*last));
	}

	if (l3 > end)
		return pass(XDPSEC_REASON_PASS_UNPARSED);
	proto = eth->h_proto;

#pragma unroll
	for (int i = 0; i < XDPSEC_MAX_VLAN_TAGS; i++) {
		struct vlan_hdr *vlan = l3;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vlan + 1) > end)
			return pass(XDPSEC_REASON_PASS_UNPARSED);
		proto = vlan->encap_proto;
		l3 = vlan + 1;
		l3off += sizeof(*vlan);
	}

	if (proto == bpf_htons(ETH_P_IP))
		return classify_ipv4(ctx, eth, l3, l3off, end);
	if (proto == bpf_htons(ETH_P_IPV6))
		return classify_ipv6(ctx, eth, l3, l3off, end);
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))
		return pass(XDPSEC_REASON_PASS_UNPARSED);
	return pass(XDPSEC_REASON_PASS_OTHER);
}
