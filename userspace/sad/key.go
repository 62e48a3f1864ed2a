package sad

import (
	"fmt"
	"net/netip"

	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

// SAKey identifies an inbound SA as RFC 4301 §4.1 and the kernel do: the
// SPI, the destination address and the protocol. The XDP program's SA map
// uses the same triple (plus the family, implied by Dst).
type SAKey struct {
	SPI   uint32
	Dst   netip.Addr
	Proto ipsec.Proto
}

func (k SAKey) String() string {
	return fmt.Sprintf("%s spi 0x%08x dst %s", k.Proto, k.SPI, k.Dst)
}
