package ipsec

import "errors"

// ErrFragment is Encrypt's error when a transport-mode SA is asked to
// protect an IP fragment (IPv4 MF or a non-zero offset, an IPv6 Fragment
// header with M or a non-zero offset): transport mode is applied to whole
// datagrams only (RFC 4303 §3.1.1, RFC 4302 §3.3.1). Tunnel mode carries
// fragments as they are, each one an inner packet that the far end
// delivers for reassembly (RFC 4301 §7). Callers tell it apart from
// ErrBadPacket with errors.Is; the frame is unchanged.
var ErrFragment = errors.New("transport mode cannot protect an IP fragment (RFC 4303 §3.1.1), only tunnel mode can")
