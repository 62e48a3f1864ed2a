// Package testutil gives tests their own network namespaces and veth pairs.
//
// Every namespace is uniquely named (prefix "xdpsec-", the test's name, the
// process id and a random suffix) and is deleted by t.Cleanup, so a failing
// test leaves nothing behind. Tests that need it call RequireRoot first: it
// skips with a clear message when not root. CI runs as root.
package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// Prefix starts the name of every namespace this package creates, so a leak
// check (or an operator) can find them.
const Prefix = "xdpsec-"

// RequireRoot skips the test unless it runs as root, which namespaces, XDP
// and AF_XDP need.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: creates network namespaces and loads BPF (run the suite as root, as CI does)")
	}
}

// NS is a named network namespace that exists for the life of one test.
type NS struct {
	// Name is the name under /run/netns, usable with `ip netns exec`.
	Name   string
	handle netns.NsHandle
}

var unsafeChars = regexp.MustCompile(`[^a-zA-Z0-9]+`)

// NewNS creates a namespace for tb, with its loopback up, and deletes it
// when the test ends (pass or fail). label is folded into the name.
func NewNS(tb testing.TB, label string) *NS {
	tb.Helper()
	RequireRoot(tb)
	var rnd [3]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		tb.Fatal(err)
	}
	label = unsafeChars.ReplaceAllString(label, "")
	if len(label) > 20 {
		label = label[:20]
	}
	name := fmt.Sprintf("%s%s-%d-%s", Prefix, label, os.Getpid(), hex.EncodeToString(rnd[:]))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	ns := &NS{Name: name}
	tb.Cleanup(func() { ns.remove(tb) })
	h, err := netns.GetFromName(name)
	if err != nil {
		tb.Fatalf("open netns %s: %v", name, err)
	}
	ns.handle = h
	ns.MustRun(tb, "ip", "link", "set", "lo", "up")
	return ns
}

func (ns *NS) remove(tb testing.TB) {
	if ns.handle.IsOpen() {
		ns.handle.Close()
	}
	if out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput(); err != nil {
		tb.Errorf("ip netns del %s: %v: %s", ns.Name, err, out)
	}
}

// Handle returns the namespace's handle (valid for the test's life).
func (ns *NS) Handle() netns.NsHandle { return ns.handle }

// Do runs fn on a locked OS thread that has entered the namespace, and
// returns that thread to the caller's namespace afterwards. Sockets, netlink
// handles and BPF links created inside fn belong to the namespace; goroutines
// fn starts do not inherit it.
func (ns *NS) Do(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns.handle); err != nil {
		return fmt.Errorf("enter netns %s: %w", ns.Name, err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			// The thread is in the wrong namespace: never reuse it.
			panic(fmt.Sprintf("return from netns %s: %v", ns.Name, err))
		}
	}()
	return fn()
}

// Command returns an exec.Cmd that runs name with args inside the namespace
// (through `ip netns exec`). The caller starts and waits for it.
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Run runs a command inside the namespace and returns its combined output.
func (ns *NS) Run(name string, args ...string) (string, error) {
	out, err := ns.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), ns.Name, err, out)
	}
	return string(out), nil
}

// MustRun is Run that fails the test on error.
func (ns *NS) MustRun(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := ns.Run(name, args...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// VethPair is two namespaces joined by a veth pair, addressed from the
// documentation ranges:
//
//	A: IfA  192.0.2.1/24  2001:db8::1/64   <->   B: IfB  192.0.2.2/24  2001:db8::2/64
//
// Both ends are up, IPv6 DAD is off and neighbours are resolved on first use.
type VethPair struct {
	A, B         *NS
	IfA, IfB     string
	IndexA       int
	IndexB       int
	MACA, MACB   net.HardwareAddr
	IPv4A, IPv4B netip.Addr
	IPv6A, IPv6B netip.Addr
}

// NewVethPair creates two fresh namespaces and a veth pair between them,
// with the kernel's default queues: one rx and one tx queue in use on each
// end, more allocated (one per possible CPU), so `ethtool -L` can raise the
// count at run time.
func NewVethPair(tb testing.TB) *VethPair {
	tb.Helper()
	return newVethPair(tb, 0)
}

// NewVethPairQueues is NewVethPair with queues rx and tx queues on each end
// (1 to 64). On veth the receiver's rx queue is the sender's tx queue (the
// skb's queue mapping, chosen by the flow hash or XPS, or an AF_XDP
// socket's queue), so several flows spread over the queues.
func NewVethPairQueues(tb testing.TB, queues int) *VethPair {
	tb.Helper()
	if queues < 1 || queues > 64 {
		tb.Fatalf("veth pair with %d queues: want 1 to 64", queues)
	}
	return newVethPair(tb, queues)
}

// newVethPair is NewVethPair with queues rx and tx queues allocated and in
// use per end, or the kernel's default when queues is 0.
func newVethPair(tb testing.TB, queues int) *VethPair {
	tb.Helper()
	p := &VethPair{
		A:     NewNS(tb, tb.Name()+"a"),
		B:     NewNS(tb, tb.Name()+"b"),
		IfA:   "xa0",
		IfB:   "xb0",
		IPv4A: netip.MustParseAddr("192.0.2.1"),
		IPv4B: netip.MustParseAddr("192.0.2.2"),
		IPv6A: netip.MustParseAddr("2001:db8::1"),
		IPv6B: netip.MustParseAddr("2001:db8::2"),
	}
	// DAD off before the links exist, so they inherit it: otherwise the
	// link-local addresses stay tentative for a second or two and IPv6
	// neighbour discovery waits on them.
	for _, ns := range []*NS{p.A, p.B} {
		ns.MustRun(tb, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	}
	// Create in A with the peer moved straight into B: the pair never
	// exists in the caller's namespace.
	var nq []string
	if queues > 0 {
		nq = []string{"numtxqueues", fmt.Sprint(queues), "numrxqueues", fmt.Sprint(queues)}
	}
	args := append(append([]string{"link", "add", p.IfA}, nq...), "type", "veth", "peer", "name", p.IfB, "netns", p.B.Name)
	p.A.MustRun(tb, "ip", append(args, nq...)...)
	for _, end := range []struct {
		ns       *NS
		ifname   string
		v4, v6   netip.Addr
		index    *int
		hardware *net.HardwareAddr
	}{
		{p.A, p.IfA, p.IPv4A, p.IPv6A, &p.IndexA, &p.MACA},
		{p.B, p.IfB, p.IPv4B, p.IPv6B, &p.IndexB, &p.MACB},
	} {
		end.ns.MustRun(tb, "ip", "addr", "add", end.v4.String()+"/24", "dev", end.ifname)
		end.ns.MustRun(tb, "ip", "addr", "add", end.v6.String()+"/64", "dev", end.ifname, "nodad")
		end.ns.MustRun(tb, "ip", "link", "set", end.ifname, "up")
		err := end.ns.Do(func() error {
			ifc, err := net.InterfaceByName(end.ifname)
			if err != nil {
				return err
			}
			*end.index = ifc.Index
			*end.hardware = ifc.HardwareAddr
			return nil
		})
		if err != nil {
			tb.Fatalf("read %s in %s: %v", end.ifname, end.ns.Name, err)
		}
	}
	return p
}

// Leaked returns the namespaces under /run/netns that this process created
// and has not removed, for leak checks at the end of a test.
func Leaked() []string {
	entries, _ := os.ReadDir("/run/netns")
	mine := fmt.Sprintf("-%d-", os.Getpid())
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), Prefix) && strings.Contains(e.Name(), mine) {
			out = append(out, e.Name())
		}
	}
	return out
}

// CheckRemoved reports an error for each namespace in names that still
// exists: call it after the (sub)test that created them has ended and its
// cleanups have run.
func CheckRemoved(tb testing.TB, names ...string) {
	tb.Helper()
	for _, n := range names {
		if slices.Contains(Leaked(), n) {
			tb.Errorf("namespace %s left behind", n)
		}
	}
}
