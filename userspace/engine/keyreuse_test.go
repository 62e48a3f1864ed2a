package engine

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

// lockedBuffer is a bytes.Buffer the engine's logger may write from any
// goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestKeyReuseWarned: tunnelConfig gives the IPv4 and IPv6 SA of each
// direction one AES-GCM key. The engine admits them (every SA starts its
// IVs at its own random offset, and Linux admits them too) but logs that
// the key is shared, naming the SAs and never the key.
func TestKeyReuseWarned(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	path := filepath.Join(t.TempDir(), "xdpsec.conf")
	if err := os.WriteFile(path, []byte(tunnelConfig(true, p.IfA, mountBPFFS(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	fc, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	var log lockedBuffer
	fc.Logger = slog.New(slog.NewTextHandler(&log, nil))
	var e *Engine
	if err := p.A.Do(func() error { e, err = Start(fc.Config); return err }); err != nil {
		t.Fatalf("start: %v", err)
	}
	defer e.Stop()
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
