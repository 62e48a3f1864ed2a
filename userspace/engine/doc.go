// Package engine is xdpsec's host-mode IPsec engine: it joins the XDP
// classifier (loader), one AF_XDP socket per receive queue (afxdp), the
// transforms (ipsec), the SA and policy databases (sad), a multi-queue TUN
// device (engine/tun), next-hop resolution (engine/neigh) and path MTU errors
// (engine/pmtu) into the two pipelines of DESIGN.md.
//
// # The two pipelines
//
// One worker goroutine runs per receive queue, locked to its OS thread. It owns
// queue q's AF_XDP socket on every link, and TUN queue q.
//
// Inbound: XSK rx batch → ParseOuter → SAD lookup → Decrypt (replay check,
// ICV, replay update, decapsulation, all inside ipsec) → inbound policy check
// (selector fields from sad.FlowOf) → one batch write of the inner packets
// into the TUN queue → frames back to the fill ring. Transport mode needs
// nothing extra: Decrypt rebuilds the IP header around the payload, and a
// bundle's next SA (ESP inside AH) is undone from there.
//
// Outbound: TUN read batch straight into AF_XDP frames (no copy) → SPD
// lookup on the packet's selector → PROTECT: SA per template, Encrypt in
// place, Ethernet header from neigh, AF_XDP transmit; BYPASS: the same without
// Encrypt; DISCARD: counted. A packet that would exceed the route MTU once
// encapsulated is answered with an ICMP "too big" written back into the TUN.
// Packets larger than the TUN's MTU reach the engine as IP fragments (IPv4
// without DF, IPv6 fragmented by its sender): tunnel mode encrypts each
// fragment as an inner packet and the peer's kernel reassembles at its TUN
// (RFC 4301 §7); transport mode refuses them (out-transport-fragment, RFC
// 4303 §3.1.1). A fragment without ports matches only policies with ANY
// ports (sad.SPD.LookupFlow).
//
// TUN offload (default; `tun-offload off` disables it): the TUN carries a
// virtio_net_hdr (engine/tun Config.VnetHdr). Outbound, one read returns up
// to a 64 KiB TCP/UDP super-packet that engine/gso cuts into MTU-sized
// segments, each copied into its own AF_XDP frame and then protected as
// above. Inbound, the decrypted TCP segments of one flow in a batch are
// coalesced (engine/gso, GRO rules) into one writev(2) with a GSO header.
// Counters stay per wire packet (segment); in-coalesced counts the
// segments that shared another's write.
//
// The hot path makes no allocation, no channel operation and no per-packet
// syscall: the syscalls are per batch (the AF_XDP kicks, the TUN read and
// write loops, which the TUN API makes one read(2)/write(2) per packet, or
// per super-packet with the offload, see engine/tun), and poll(2) only when
// a worker found nothing to do for a bounded number of rounds: for 1 s when
// nothing is in flight, for 1–16 ms while packets wait on a tx ring (a kick
// the kernel refused as busy) or sent frames are not yet reaped, since
// nothing wakes poll for those.
//
// # The XDP SA map follows the SAD
//
// Every change of the SAD made through the Engine (AddSA, UpdateSA, DeleteSA,
// Reload, lifetime expiry) is followed by a sync of the loader's SA map: the
// inbound SAs (those whose destination is a local address of the namespace,
// or whose spec says `dir in`) are put, the others removed. Only packets of
// SAs in the map are steered; the rest pass to the kernel.
//
// # Several queues
//
// Received per-queue SAs (RFC 9611: one SA per queue or CPU of the sender,
// all with the same selectors) need nothing special: each is one SAD entry,
// and an in policy whose template names no SPI accepts them all. Sending,
// an SA with `pcpu-num N` serves queue N only: worker q takes the newest
// matching SA with pcpu-num q, else the newest matching SA without
// pcpu-num (the fallback, as in Linux 6.13+), never another queue's
// (sad.LookupOutbound); an SA naming a queue the engine does not have is
// refused. Without pcpu-num every worker sends on the newest matching SA
// (a rekey's successor). A receiving NIC's RSS usually hashes ESP by
// addresses (and SPI), which keeps one SA on one rx queue; a veth does not
// (its rx queue is the sender's tx queue). One SA received on several
// queues shares one replay window, and the queues reorder its packets by
// up to a batch (128 frames a round) and, while a worker is off its CPU,
// by all the other queues carry meanwhile: on two shared vCPUs, a
// 64-packet window refused 13-16% of the ESP packets of TCP through such
// an SA as replay, a 65536-packet one none (tests/tunnel
// BenchmarkMultiQueueTCP). Give SAs carried by several queues a replay
// window of thousands of packets; with one SA per queue at both ends
// (pcpu-num, and a NIC or veth that keeps each SA on one queue) nothing
// reorders an SA and the default 64-packet window suffices (tests/tunnel
// TestMultiQueuePerQueueSend). `queues N` below a link's rx queues in use
// leaves the others without a socket (their IPsec packets pass to the
// kernel, steer-fallback); Start warns about it.
//
// # Transport mode and routing
//
// An outbound policy's destination prefix is routed into the TUN, so the
// local stack hands the engine what the policy selects. In transport mode
// that prefix holds the peer's own (outer) address, and the kernel's route
// to it names the TUN. The outer packet's next hop is therefore looked up
// constrained to the engine's links (neigh.Config.Links: `ip route get
// ADDR oif LINK`), which skips the TUN route and finds the link's connected
// route or gateway. We chose this over a separate routing table and rule
// for the TUN routes: nothing but the TUN routes is added to the kernel's
// tables, `ip route get PEER` tells the truth about where the local stack's
// packets go, and route changes on the link are still followed. A policy
// that selects every protocol to the peer also catches the kernel's own IKE
// packets to it: add a BYPASS policy for UDP 500/4500 where an IKE daemon
// runs.
//
// Taking the TUN down (ip link set xdpsec0 down) makes the kernel delete
// every route through it and its IPv6 addresses; the engine follows the
// TUN's link state and puts its addresses, configured routes and policy
// routes back when it comes up again.
//
// # Stop and fail-open
//
// Stop ends the workers, closes the sockets (the kernel empties their XSKMAP
// slots), removes the TUN (and with it every route through it) and detaches
// the XDP program. With Config.FailOpen the program and its pinned maps stay:
// IPsec packets of known SAs are then counted steer-fallback and passed to
// the kernel, and a restarted engine re-attaches to the same pins and resumes
// steering. A SIGKILLed daemon leaves the same state, provided the pins live
// on a bpffs that outlives the process (see Config.PinRoot).
//
// # Concurrency
//
// The Engine's methods are safe for concurrent use; writers (SA and policy
// changes, Reload) are serialised by one mutex, the workers never take it.
// A worker takes up to 128 frames per inbound round and remembers the
// inbound policy decision for the last flow and SA list within that round:
// a policy change applies to every packet of the rounds that start after it
// (at most one batch later than a lookup per packet would).
//
// # Limits (documented, not hidden)
//
//   - ESP-in-UDP (NAT-T) is received on 4500 and on the ports of the
//     inbound SAs' `encap espinudp SPORT DPORT` (DPORT), at most
//     loader.MaxNATTPorts besides 4500: the engine writes them into the XDP
//     config and refuses an SA that would need one more. IKE (the non-ESP
//     marker) and keepalives are the kernel's: XDP passes them to the
//     namespace's UDP sockets. The engine does not learn a peer's new NAT
//     mapping from received packets (the IKE daemon updates the SA).
//   - A policy with several templates (an AH+ESP bundle) applies them in the
//     order given, innermost first, at most two per packet; inbound, the
//     SAs are undone outermost first as long as each is in transport mode,
//     and the in policy must have a template for every SA that carried the
//     packet. A tunnel-mode SA ends the unwrapping: an inner packet that is
//     again IPsec for this host is delivered to the kernel as it is.
//   - The XDP SA map's size is the kernel's max_entries of the map in use
//     (a pinned map reused from an earlier run keeps its size): an inbound
//     SA beyond it is refused (ErrSAMapFull), outbound SAs need no entry.
//   - One packet is one AF_XDP frame (no multi-buffer: sockets are bound
//     without XDP_USE_SG and the XDP program is not xdp.frags) of
//     Config.FrameSize bytes, 2048 (the default) or 4096 (config line
//     `frame-size 4096`). Outbound, the TUN MTU is at most
//     TUNMTULimit(FrameSize), 1664 or 3712 bytes: Start caps a derived MTU
//     there (its log line names `frame-size 4096` when that would carry
//     more) and refuses a larger Config.MTU, and a packet over it, the MTU
//     raised by hand, is answered with ICMP too-big naming it, never cut.
//     Inbound, the kernel copies a packet into the frame behind
//     XDP_PACKET_HEADROOM (256 bytes): an Ethernet frame over
//     RxFrameLimit(FrameSize), 1792 or 3840 bytes, is dropped before the
//     engine sees it, counted in the socket's rx_dropped (Stats.Sockets;
//     Start warns about link MTUs that allow such frames).
//   - The link itself may allow less than the frame. Native XDP without
//     xdp.frags needs a whole packet in one page: veth refuses to
//     attach native XDP while the peer's MTU is above 3506 bytes on
//     x86-64 with 4 KiB pages: PAGE_SIZE less 256 of headroom, 320 of
//     aligned skb_shared_info and 14 of Ethernet header ("Peer MTU is
//     too large to set XDP"; measured on 6.18; at attach, ModeAuto then
//     falls back to generic XDP), and once native XDP is attached
//     refuses to raise the peer's MTU above that (ip link: "mtu greater
//     than device maximum"); NIC drivers without multi-buffer XDP have
//     similar page-based limits. So with 4096-byte frames and native
//     XDP the link MTU (at most ~3500), not the frame (3826-byte IP
//     packets), is the ceiling; generic XDP carries what the frame
//     holds, and larger (jumbo) IPsec packets need multi-buffer XDP.
//   - The TUN MTU follows neither link MTU changes nor SAs added later; a
//     lower route MTU is still honoured per packet (ICMP too-big).
//   - Only the first link with a socket (the primary) lends frames to TUN
//     reads; a packet routed over another link is copied into a frame of
//     that link's socket (multi-link hosts only).
//   - The engine reads the Ethernet header itself (l3Offset: EtherType and
//     up to two VLAN tags); every IP and IPsec header is read by ipsec and
//     sad.
//   - Outbound IPv4 packets without DF that do not fit are dropped and
//     counted (out-too-big-dropped), not fragmented; so are IPv6 packets
//     when the tunnel's inner MTU (route MTU minus overhead) is below 1280,
//     which IPv6 forbids announcing (RFC 8200 §5): give IPv6 tunnels a link
//     MTU of at least 1280 plus the SA's overhead. The outer packet is never
//     fragmented.
package engine
