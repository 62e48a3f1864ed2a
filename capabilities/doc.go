// Package capabilities says what xdpsec can offload, what the operator
// allows, and what is on now — the three views an NDIS miniport reports
// with NDIS_IPSEC_OFFLOAD_V1 / NDIS_IPSEC_OFFLOAD_V2 — and tells listeners
// when the current view changes.
//
// One canonical description, Offload, holds each view; V1 and V2 are
// derived from it (IPsecOffloadV1, IPsecOffloadV2, byte-exact with the
// Windows layouts) and Linux-native facts NDIS cannot express sit beside
// them (Linux). Probe fills the hardware view from what really works on
// this machine: algorithms that pass their known-answer self-test, kernel
// and CPU features, the link (native XDP is tried, not assumed), the shapes
// the loaded XDP program publishes and the SA map's real size.
//
// Parameters mirror OID_TCP_OFFLOAD_PARAMETERS (IPsecV1, IPsecV2,
// IPsecV2IPv4) plus per-algorithm switches; State.Current is hardware ∩
// parameters and is the only view the datapath obeys (XDPConfig for the
// XDP program, State.Allows for `sa add`). ParseSettings reads them as
// `xdpsec caps set` and the config's `offload` lines give them (the latter
// persist, as an NDIS driver's registry keywords do: Hub.ResetParameters).
// Hub publishes every change of
// the current view with a sequence number and a reason, as
// NDIS_STATUS_TASK_OFFLOAD_CURRENT_CONFIG does; WatchLink feeds it netlink
// link events. Render is the one place that prints capabilities.
package capabilities
