/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * xdpsec.h: every layout and number shared between the XDP program and Go.
 * Go never mirrors these by hand: bpf2go -type turns each of them into a Go
 * type in xdpsec_bpfel.go (bpf/gen.go lists them).
 *
 * Byte order: fields named *_be are in network byte order, exactly as they
 * sit in the packet; everything else is host order.
 */
#ifndef XDPSEC_H
#define XDPSEC_H

/* Address families of an SA key, same numbers as AF_INET / AF_INET6. */
enum xdpsec_family {
	XDPSEC_FAMILY_IPV4 = 2,
	XDPSEC_FAMILY_IPV6 = 10,
};

/*
 * struct xdpsec_sa_key identifies an inbound SA the way the kernel's
 * xfrm_state_lookup does: (SPI, destination address, protocol, family).
 * ESP-in-UDP SAs use proto 50 (ESP); the encapsulation is in the value.
 *
 * daddr: IPv6 uses all 16 bytes; IPv4 uses the first 4 bytes and the other
 * 12 MUST be zero (not v4-mapped). pad MUST be zero. Both sides build keys
 * from zeroed memory, so hashing never sees stray bytes.
 */
struct xdpsec_sa_key {
	__be32 spi_be;
	__u8 daddr[16];
	__u8 proto;  /* 50 ESP, 51 AH */
	__u8 family; /* enum xdpsec_family */
	__u16 pad;
};

/*
 * struct xdpsec_sa is the value of the per-CPU SA map. The first fields are
 * configuration written by the loader (identical on every CPU); packets and
 * bytes are this CPU's share of the SA's counters, bumped without atomics.
 *
 * encap_dport: 0 for plain ESP/AH; for ESP-in-UDP (RFC 3948) the UDP
 * destination port the SA was negotiated on (host order). A packet whose
 * encapsulation differs is passed and counted as state-mismatch, as the
 * kernel's XfrmInStateMismatch does.
 * bytes counts the IP datagram (outer IP header included, L2 excluded).
 */
struct xdpsec_sa {
	__u32 sa_id; /* opaque handle chosen by userspace, reported by classify */
	__u16 encap_dport;
	__u16 pad;
	__u64 packets;
	__u64 bytes;
};

/*
 * Receive-offload classes the config map switches. A packet is steered only
 * if the bit of its protocol class AND the bit of its address family are set.
 */
enum xdpsec_class {
	XDPSEC_CLASS_ESP = 1 << 0,     /* ESP directly over IP */
	XDPSEC_CLASS_AH = 1 << 1,      /* AH (possibly followed by ESP) */
	XDPSEC_CLASS_UDP_ESP = 1 << 2, /* ESP in UDP, RFC 3948 */
	XDPSEC_CLASS_IPV4 = 1 << 3,
	XDPSEC_CLASS_IPV6 = 1 << 4,
};

/* Extra NAT-T ports beyond 4500 (which is always ESP-in-UDP). */
#define XDPSEC_MAX_NATT_PORTS 4

/* struct xdpsec_config is the single entry (key 0) of the config map. */
struct xdpsec_config {
	__u32 enabled; /* enum xdpsec_class bits */
	__u16 natt_ports[XDPSEC_MAX_NATT_PORTS]; /* host order, 0 = unused */
};

/*
 * struct xdpsec_lladdr is the single entry (key 0) of the link-address map:
 * the MAC address of the link the program is attached to, which an XDP
 * program cannot read itself. The loader writes it at attach and whenever
 * the link's address changes. All zero (a fresh map, or a link without an
 * Ethernet address) means "do not check".
 */
struct xdpsec_lladdr {
	__u8 addr[6];
	__u16 pad; /* MUST be zero */
};

/*
 * Reasons, one per-CPU counter each. The loader names them (loader.Reason);
 * where /proc/net/xfrm_stat has the same event, the name says so there.
 */
enum xdpsec_reason {
	XDPSEC_REASON_PASS_OTHER = 0,  /* not IPsec for this host (incl. IPv6 with a routing header in transit): passed untouched */
	XDPSEC_REASON_PASS_UNPARSED,   /* what the kernel must judge: truncated L2/L3, >2 VLAN tags, too many or misplaced IPv6 ext headers, a bad IPv4 header checksum on a packet about to be steered, ESP-in-UDP over IPv6 with UDP checksum 0 */
	XDPSEC_REASON_PASS_IKE,        /* UDP 500, or a NAT-T datagram that is not ESP (non-ESP marker, or 8 bytes or less): the kernel gives it to the IKE socket */
	XDPSEC_REASON_PASS_KEEPALIVE,  /* NAT-T keepalive, one 0xFF byte */
	XDPSEC_REASON_PASS_FRAGMENT,   /* IPv4 fragment or IPv6 fragment header (not atomic): kernel reassembles */
	XDPSEC_REASON_NO_STATE,        /* IPsec, SA unknown (XfrmInNoStates) */
	XDPSEC_REASON_STATE_MISMATCH,  /* SA known, encapsulation differs (XfrmInStateMismatch) */
	XDPSEC_REASON_DISABLED_CLASS,  /* SA known, receive offload off for this class/family */
	XDPSEC_REASON_STEERED,         /* redirected to the rx queue's AF_XDP socket */
	XDPSEC_REASON_STEER_FALLBACK,  /* would steer, no socket on the queue: passed */
	XDPSEC_REASON_MALFORMED_ESP,   /* truncated ESP header or SPI 0: dropped (XfrmInHdrError) */
	XDPSEC_REASON_MALFORMED_AH,    /* truncated AH, length out of range or SPI 0: dropped (XfrmInHdrError) */
	XDPSEC_REASON_MALFORMED_UDP,   /* NAT-T datagram with a bad UDP length: dropped (XfrmInHdrError) */
	XDPSEC_REASON_PASS_OTHERHOST,  /* IPsec or UDP in a unicast frame to another MAC than the link's (promiscuous mode): the kernel drops it as PACKET_OTHERHOST */
	XDPSEC_REASON_MAX,
};

/*
 * Packet shapes the program handles, published in .rodata as
 * xdpsec_features so a reader of the loaded object (the capabilities
 * module) learns them from the program itself.
 */
enum xdpsec_feature {
	XDPSEC_FEATURE_VLAN = 1 << 0,        /* one 802.1Q tag */
	XDPSEC_FEATURE_QINQ = 1 << 1,        /* 802.1ad + 802.1Q (two tags) */
	XDPSEC_FEATURE_IPV4 = 1 << 2,
	XDPSEC_FEATURE_IPV4_OPTIONS = 1 << 3,
	XDPSEC_FEATURE_IPV6 = 1 << 4,
	XDPSEC_FEATURE_IPV6_EXT = 1 << 5,    /* hop-by-hop, routing (segments left 0), dest opts, atomic fragment before IPsec */
	XDPSEC_FEATURE_ESP = 1 << 6,
	XDPSEC_FEATURE_AH = 1 << 7,
	XDPSEC_FEATURE_AH_ESP = 1 << 8,      /* AH followed by ESP */
	XDPSEC_FEATURE_UDP_ESP = 1 << 9,     /* RFC 3948 on 4500 + configured ports */
	XDPSEC_FEATURE_IKE_PASS = 1 << 10,   /* IKE and keepalives reach the kernel */
	XDPSEC_FEATURE_FRAGMENT_PASS = 1 << 11,
	XDPSEC_FEATURE_STEER_XSK = 1 << 12,  /* redirect to XSKMAP[rx_queue], XDP_PASS fallback */
	XDPSEC_FEATURE_OTHERHOST_PASS = 1 << 13, /* unicast frames to another MAC pass (xdpsec_lladdr) */
};

/* Limits of the parser, part of the contract. */
#define XDPSEC_MAX_VLAN_TAGS 2
#define XDPSEC_MAX_IPV6_EXT_HDRS 6

/*
 * struct xdpsec_last is written only by the classify variant of the object
 * (xdpsec_record_last = 1 at load time; the verifier removes the code
 * otherwise): what the last packet run through BPF_PROG_TEST_RUN matched.
 */
struct xdpsec_last {
	__u32 reason; /* enum xdpsec_reason */
	__u32 matched; /* 1 if an SA was found */
	__u32 looked_up; /* 1 if an SA lookup ran: key holds the packet's SA key */
	struct xdpsec_sa_key key;
	__u32 sa_id;
};

#endif /* XDPSEC_H */
