package deploy

import (
	_ "embed"
	"errors"
	"strings"
)

// Unit is the systemd unit as shipped (deploy/xdpsec.service).
//
//go:embed xdpsec.service
var Unit string

// UnitCapabilities returns the capabilities the unit grants (its
// CapabilityBoundingSet= lines): tests run the daemon with exactly these.
func UnitCapabilities() ([]string, error) {
	var caps []string
	for _, line := range strings.Split(Unit, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "CapabilityBoundingSet="); ok {
			caps = append(caps, strings.Fields(v)...)
		}
	}
	if len(caps) == 0 {
		return nil, errors.New("xdpsec.service has no CapabilityBoundingSet=")
	}
	return caps, nil
}
