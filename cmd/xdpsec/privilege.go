package main

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// capBits are the bit numbers (in /proc/PID/status) of the capabilities
// the daemon's start-up steps need (see deploy/README.md). effectiveCaps
// is in attach.go.
var capBits = map[string]uint{
	"CAP_NET_ADMIN": 12,
	"CAP_NET_RAW":   13,
	"CAP_IPC_LOCK":  14,
	"CAP_SYS_ADMIN": 21,
	"CAP_BPF":       39,
}

// privilegeHint explains a start-up failure caused by a missing
// capability: it names the step's capabilities the process lacks and how
// to grant them, or returns "" when the failure is not one of those (or
// every capability is there, so the cause is elsewhere).
func privilegeHint(err error) string {
	msg := err.Error()
	denied := errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || strings.Contains(msg, "not permitted")
	var need []string
	extra := ""
	switch {
	case strings.Contains(msg, "register UMEM") && (errors.Is(err, unix.ENOBUFS) || strings.Contains(msg, "no buffer space")):
		need = []string{"CAP_IPC_LOCK"}
		var rl unix.Rlimit
		if unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl) == nil && rl.Cur != unix.RLIM_INFINITY {
			extra = fmt.Sprintf(", or raise LimitMEMLOCK= (now %d KiB) above the UMEM size", rl.Cur>>10)
		}
	case !denied:
		return ""
	case strings.Contains(msg, "AF_XDP socket"):
		need = []string{"CAP_NET_RAW"}
	case strings.Contains(msg, "attach xdp"), strings.Contains(msg, "XSKMAP"):
		need = []string{"CAP_BPF", "CAP_NET_ADMIN"}
	case strings.Contains(msg, "tun"), strings.Contains(msg, "netlink"), strings.Contains(msg, "route"):
		need = []string{"CAP_NET_ADMIN"}
	default:
		need = []string{"CAP_BPF", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK"}
	}
	have, ok := effectiveCaps()
	if !ok {
		return ""
	}
	var missing []string
	for _, c := range need {
		// CAP_SYS_ADMIN stands in for CAP_BPF (the kernel's bpf_capable).
		if have&(1<<capBits[c]) == 0 && (c != "CAP_BPF" || have&(1<<capBits["CAP_SYS_ADMIN"]) == 0) {
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return fmt.Sprintf(" (the daemon lacks %s: grant it with CapabilityBoundingSet= and AmbientCapabilities= as deploy/xdpsec.service does%s)",
		strings.Join(missing, " and "), extra)
}
