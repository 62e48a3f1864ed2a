package engine

import (
	"errors"
	"strings"
	"testing"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/userspace/sad"
)

// TestPCPUBeyondQueuesRefused: an SA whose pcpu-num names a queue the
// engine has no worker for is refused (no worker would ever send on it),
// on add and on update, with one line naming the SA and the queues; one
// naming an existing queue is admitted.
func TestPCPUBeyondQueuesRefused(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	e := startFromConfig(t, p.A, tunnelConfig(true, p.IfA, mountBPFFS(t)))
	spec := func(pcpu string) *sad.SASpec {
		t.Helper()
		s, err := sad.ParseSA(strings.Fields("src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1201 mode tunnel aead rfc4106(gcm(aes)) 0x5152535455565758595a5b5c5d5e5f6061626364 128 pcpu-num " + pcpu))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	err := e.AddSA(spec("1"))
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "pcpu-num 1") || !strings.Contains(err.Error(), "0x00001201") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("AddSA pcpu-num 1 on a 1-queue engine: %v", err)
	}
	if _, err := e.GetSA(spec("1").Key()); err == nil {
		t.Fatal("the refused SA is in the SAD")
	}
	if err := e.AddSA(spec("0")); err != nil {
		t.Fatalf("AddSA pcpu-num 0: %v", err)
	}
	if err := e.UpdateSA(spec("3")); !errors.Is(err, ErrConfig) {
		t.Fatalf("UpdateSA to pcpu-num 3: %v", err)
	}
	if a, err := e.GetSA(spec("0").Key()); err != nil || a.Spec().PCPU == nil || *a.Spec().PCPU != 0 {
		t.Fatalf("after a refused update the SA changed: %v", err)
	}
}
