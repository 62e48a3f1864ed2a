package engine

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

// TestKeyReuseWarned: tunnelConfig gives the IPv4 and IPv6 SA of each
// direction one AES-GCM key. The engine admits them (every SA starts its
// IVs at its own random offset, and Linux admits them too) but logs that
// the key is shared, naming the SAs and never the key.
func TestKeyReuseWarned(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	var log testutil.LogBuffer
	e := startWith(t, p.A, tunnelConfig(true, p.IfA, mountBPFFS(t)), func(fc *FileConfig) {
		fc.Logger = slog.New(slog.NewTextHandler(&log, nil))
	})
	if n := len(e.SAD().List()); n != 4 {
		t.Fatalf("%d SAs installed, want 4", n)
	}
	var warned []string
	for _, l := range strings.Split(log.String(), "\n") {
		if strings.Contains(l, "shares its key with another SA") {
			warned = append(warned, l)
		}
	}
	// The second SA of each shared key is the one that finds the first.
	if len(warned) != 2 || !strings.Contains(warned[0], "0x00001101") || !strings.Contains(warned[0], "0x00001001") {
		t.Fatalf("key reuse warnings %q, want 2 naming the IPv6 and IPv4 SAs", warned)
	}
	for _, k := range []string{keyAB[2:], keyBA[2:], keyAB[2:10], keyBA[2:10]} {
		if strings.Contains(log.String(), k) {
			t.Fatalf("the log shows key bytes %s:\n%s", k, log.String())
		}
	}
}
