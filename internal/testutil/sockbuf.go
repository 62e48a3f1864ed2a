package testutil

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// ForceReadBuffer sets c's receive buffer to n bytes with SO_RCVBUFFORCE
// (CAP_NET_ADMIN), past net.core.rmem_max: SetReadBuffer is silently cut
// to rmem_max, which is 212992 on a stock Debian machine, and a test's
// burst would then be lost to buffer overflow, not to the code under test.
func ForceReadBuffer(c syscall.Conn, n int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("SO_RCVBUFFORCE %d: %w", n, serr)
	}
	return nil
}
