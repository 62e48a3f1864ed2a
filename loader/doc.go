// Package loader loads xdpsec's XDP classifier (package bpf), attaches it to
// links, pins it so that a restarted process finds it again, and programs
// its maps through typed methods.
//
// The pieces, and which to call:
//
//   - Attach(ifname, mode, opts) loads the program and attaches it (native,
//     generic, or auto = native falling back to generic). Maps and the
//     bpf_link are pinned under opts.PinRoot/<ifname>/ (default
//     /sys/fs/bpf/xdpsec/<ifname>/); calling Attach again, from this or
//     another process, reuses what is pinned.
//   - Open(ifname, opts) re-opens a pinned attachment without changing it.
//   - Detach(ifname, opts) removes the link, every pin and the directory.
//   - A Datapath (from Attach or Open) programs SAs (PutSA, DeleteSA, SAs),
//     XSK slots (SetXSK, ClearXSK), the receive-offload config (Config,
//     SetConfig), the link's MAC address (SetLinkAddr, UpdateLinkAddr), and
//     reads counters (Counters) and Status.
//   - Only frames addressed to the link are steered: Attach writes the
//     link's MAC into the program's map, and IPsec in a unicast frame to
//     any other MAC (promiscuous mode: tcpdump without -p, a bridge port, a
//     macvlan lower) passes to the kernel, which drops it as
//     PACKET_OTHERHOST, counted pass-otherhost. Whoever outlives a MAC
//     change (the engine) calls UpdateLinkAddr. A link without an Ethernet
//     address, and a Classifier until SetLinkAddr, check nothing. An upper
//     device with a MAC of its own (a VLAN or macvlan whose address differs
//     from the link's) is another host to this check: its IPsec is not
//     steered.
//   - A Classifier runs the same program, never attached, through
//     BPF_PROG_TEST_RUN on one frame at a time: Classify returns the verdict,
//     the reason and the matched SA.
//   - ReferenceClassify is a pure-Go classifier with the same rules, used to
//     test the BPF program differentially.
//
// Errors a caller must tell apart are sentinels: ErrLinkNotFound,
// ErrForeignProgram, ErrNotAttached, ErrPermission, ErrNoBPF, ErrInvalidSA,
// ErrInvalidConfig, ErrSANotFound.
//
// Kernel: 5.18 or later (the program calls bpf_xdp_get_buff_len and
// bpf_xdp_load_bytes; on an older kernel loading fails with ErrNoBPF naming
// the missing helper); RLIMIT_MEMLOCK is not raised, since BPF memory is
// charged to the memory cgroup from 5.11 on; bpf_link attachment where the kernel has it (5.9+),
// netlink otherwise. Privilege: CAP_BPF and CAP_NET_ADMIN (or
// CAP_SYS_ADMIN); CAP_PERFMON is not needed, the program is written for the
// verifier's rules without it (see bpf/xdpsec.c). Where bpf(2) itself is
// missing (ENOSYS), errors wrap ErrNoBPF.
//
// Pins are keyed by interface name: two network namespaces that both attach
// to an interface with the same name must use different PinRoots. An
// interface renamed while attached keeps its program (the kernel follows the
// ifindex); Attach, Open and Detach under the new name move its pins there.
// One deleted while attached loses its program; Detach by the old name
// removes the pins. Attach over pins of another xdpsec build swaps in this
// build's program (compared by kernel tag), keeping the maps. Pins of a
// live attachment in another namespace are refused, never adopted or
// removed. Attach, Open and Detach serialise, across processes, on an
// flock of the PinRoot's parent directory (/sys/fs/bpf by default).
package loader
