package xdpsectest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/userspace/engine"
)

// Bounds of the daemon's life in a test.
const (
	// readyTimeout is how long StartDaemon waits for the control socket.
	readyTimeout = 15 * time.Second
	// stopTimeout is how long Stop waits after SIGTERM before SIGKILL.
	stopTimeout = 10 * time.Second
)

// Options are the ways a test's daemon differs from a plain
// `xdpsec run --config C --socket S`.
type Options struct {
	// Args are appended to the command line (--log-format, --metrics...).
	Args []string
	// Wrap is a command prefix the daemon runs under, e.g. prlimit and
	// setpriv with a capability set: Wrap[0] is executed with the rest,
	// then the xdpsec command line, as its arguments.
	Wrap []string
	// Env is added to the daemon's environment (KEY=VALUE).
	Env []string
	// LogFile, when set, receives the daemon's stdout and stderr directly
	// (the child holds the file, no copier runs), and Log reads it back;
	// Stdout and Stderr are then empty.
	LogFile string
}

// Daemon is one `xdpsec run` in a namespace, started by StartDaemon or
// LaunchDaemon and stopped (Stop) when the test ends. Its methods are for
// the test's goroutine; Log, Stdout and Stderr may be read at any time.
type Daemon struct {
	tb   testing.TB
	bin  string
	ns   *testutil.NS
	conf Config
	opts Options

	cmd     *exec.Cmd
	log     *LogBuffer // stdout and stderr, interleaved as written
	stdout  *LogBuffer
	stderr  *LogBuffer
	done    chan struct{}
	waitErr error // valid once done is closed
}

// StartDaemon runs `xdpsec run` with conf in ns and waits, at most 15 s,
// until its control socket answers; a daemon that exits or stays silent
// fails the test with its log. The test's cleanup stops it (Stop).
func StartDaemon(tb testing.TB, ns *testutil.NS, conf Config, opts Options) *Daemon {
	tb.Helper()
	d := LaunchDaemon(tb, ns, conf, opts)
	d.waitReady()
	return d
}

// LaunchDaemon is StartDaemon without the wait for the control socket, for
// daemons a test expects to fail at start (see Wait and ExitErr).
func LaunchDaemon(tb testing.TB, ns *testutil.NS, conf Config, opts Options) *Daemon {
	tb.Helper()
	d := &Daemon{tb: tb, bin: Binary(tb), ns: ns, conf: conf, opts: opts}
	d.launch()
	tb.Cleanup(func() { d.Stop() })
	return d
}

// launch starts the process and its waiter.
func (d *Daemon) launch() {
	d.tb.Helper()
	args := append(append(append([]string(nil), d.opts.Wrap...), d.bin, "run", "--config", d.conf.Path, "--socket", d.conf.Socket), d.opts.Args...)
	d.cmd = d.ns.Command(args[0], args[1:]...)
	if len(d.opts.Env) > 0 {
		d.cmd.Env = append(os.Environ(), d.opts.Env...)
	}
	d.log, d.stdout, d.stderr = &LogBuffer{}, &LogBuffer{}, &LogBuffer{}
	if d.opts.LogFile != "" {
		f, err := os.OpenFile(d.opts.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			d.tb.Fatalf("open daemon log: %v", err)
		}
		defer f.Close() // the child has its own descriptor
		d.cmd.Stdout, d.cmd.Stderr = f, f
	} else {
		d.cmd.Stdout, d.cmd.Stderr = teeWriter{d.log, d.stdout}, teeWriter{d.log, d.stderr}
	}
	if err := d.cmd.Start(); err != nil {
		d.tb.Fatalf("start xdpsec run: %v", err)
	}
	done := make(chan struct{})
	d.done = done
	go func() { d.waitErr = d.cmd.Wait(); close(done) }()
}

// teeWriter writes to the interleaved log and to one stream's buffer.
type teeWriter struct{ all, one *LogBuffer }

func (w teeWriter) Write(p []byte) (int, error) {
	w.all.Write(p)
	return w.one.Write(p)
}

// waitReady polls `xdpsec stats` until it answers, bounded.
func (d *Daemon) waitReady() {
	d.tb.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		if _, err := d.CLI("stats"); err == nil {
			return
		}
		select {
		case <-d.done:
			d.tb.Fatalf("xdpsec run exited at start (%v):\n%s", d.waitErr, d.Log())
		default:
		}
		if time.Now().After(deadline) {
			d.tb.Fatalf("xdpsec run not answering on %s after %v:\n%s", d.conf.Socket, readyTimeout, d.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Restart starts the daemon again with the same config and options, once
// the previous process has exited (Kill or Stop), and waits for its control
// socket. The log buffers start empty.
func (d *Daemon) Restart() {
	d.tb.Helper()
	select {
	case <-d.done:
	default:
		d.tb.Fatalf("restart xdpsec run (pid %d): it is still running", d.PID())
	}
	d.launch()
	d.waitReady()
}

// Stop sends SIGTERM to the daemon's PID and waits at most 10 s for it to
// exit, then (failing the test) sends SIGKILL to that PID and waits. It
// reports whether this call stopped a running daemon with SIGTERM: false if
// it had exited already or had to be killed. Stopping twice is harmless.
func (d *Daemon) Stop() bool {
	select {
	case <-d.done:
		return false
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return true
	case <-time.After(stopTimeout):
		d.tb.Errorf("xdpsec run (pid %d) ignored SIGTERM for %v; killing it\n%s", d.cmd.Process.Pid, stopTimeout, d.Log())
		d.cmd.Process.Kill()
		<-d.done
		return false
	}
}

// Kill sends SIGKILL to the daemon's PID and waits for it to exit: the
// daemon gets no chance to clean up (pins and XDP stay).
func (d *Daemon) Kill() {
	d.cmd.Process.Kill()
	<-d.done
}

// Wait waits at most timeout for the daemon to exit by itself and reports
// whether it did.
func (d *Daemon) Wait(timeout time.Duration) bool {
	select {
	case <-d.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// ExitErr is the exit error of a daemon that has exited (nil: status 0).
// Call it only after Wait, Stop or Kill saw the exit.
func (d *Daemon) ExitErr() error {
	select {
	case <-d.done:
		return d.waitErr
	default:
		return ErrNotRunning
	}
}

// Signal sends sig to the daemon's PID; ErrNotRunning once it has exited.
func (d *Daemon) Signal(sig os.Signal) error {
	select {
	case <-d.done:
		return ErrNotRunning
	default:
	}
	if err := d.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal xdpsec run (pid %d): %w", d.cmd.Process.Pid, err)
	}
	return nil
}

// PID is the process id of the daemon's current process (with Wrap, the
// wrapper's, which execs the daemon).
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// NS is the namespace the daemon runs in.
func (d *Daemon) NS() *testutil.NS { return d.ns }

// Bin is the path of the xdpsec binary the daemon runs.
func (d *Daemon) Bin() string { return d.bin }

// Socket is the daemon's control socket.
func (d *Daemon) Socket() string { return d.conf.Socket }

// Config is the daemon's configuration on disk.
func (d *Daemon) Config() Config { return d.conf }

// Command returns, unstarted, `xdpsec ARGS --socket S` in the daemon's
// namespace, for commands that run alongside the test (capture, watch).
func (d *Daemon) Command(args ...string) *exec.Cmd {
	return d.ns.Command(d.bin, append(append([]string(nil), args...), "--socket", d.conf.Socket)...)
}

// CLI runs `xdpsec ARGS --socket S` in the daemon's namespace and returns
// its combined output, as printed, and a non-nil error if it failed.
func (d *Daemon) CLI(args ...string) (string, error) {
	out, err := d.Command(args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("xdpsec %s in %s: %w", strings.Join(args, " "), d.ns.Name, err)
	}
	return string(out), nil
}

// MustCLI is CLI that fails the test, with the output, on error.
func (d *Daemon) MustCLI(args ...string) string {
	d.tb.Helper()
	out, err := d.CLI(args...)
	if err != nil {
		d.tb.Fatalf("%v: %s", err, out)
	}
	return out
}

// Stats returns `xdpsec stats -j` decoded; a failure fails the test.
func (d *Daemon) Stats() engine.Stats {
	d.tb.Helper()
	out := d.MustCLI("stats", "-j")
	var st engine.Stats
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		d.tb.Fatalf("stats -j: %v\n%s", err, out)
	}
	return st
}

// SettledStats is Stats once the packet counters have stopped moving: the
// workers count a batch after handing it on (a receiver can see a packet
// a moment before the daemon has counted it), so a test that checks exact
// counters after its traffic ended reads them here. It reads until two
// reads 50 ms apart agree on the engine counters, the verdicts, the
// links' reasons and the SAs' counters, for at most 2 s.
func (d *Daemon) SettledStats() engine.Stats {
	d.tb.Helper()
	key := func(st engine.Stats) string {
		b, _ := json.Marshal([]any{st.Counters, st.InVerdicts, st.Links, st.SAs})
		return string(b)
	}
	prev := d.Stats()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		cur := d.Stats()
		if key(cur) == key(prev) {
			return cur
		}
		prev = cur
	}
	return prev
}

// Log is the daemon's stdout and stderr so far, interleaved as written (or
// the LogFile's content).
func (d *Daemon) Log() string {
	if d.opts.LogFile != "" {
		b, _ := os.ReadFile(d.opts.LogFile)
		return string(b)
	}
	return d.log.String()
}

// Stdout is what the daemon wrote to its stdout so far.
func (d *Daemon) Stdout() string { return d.stdout.String() }

// Stderr is what the daemon wrote to its stderr so far (its log lines).
func (d *Daemon) Stderr() string { return d.stderr.String() }

// Dump renders each daemon's text stats and log, for failure messages.
func Dump(ds ...*Daemon) string {
	var b strings.Builder
	for _, d := range ds {
		st, _ := d.CLI("stats")
		fmt.Fprintf(&b, "\n--- %s stats:\n%s--- log:\n%s", d.ns.Name, st, d.Log())
	}
	return b.String()
}

// Ping sends n echo requests to dst from ns, one each 0.1 s until n replies
// came back or 10 s passed (the first may find the next hop unresolved),
// and returns ping's output. Fewer than n replies fails the test with the
// daemons' Dump; more is fine (replies held back together can arrive after
// the n-th).
func Ping(tb testing.TB, ns *testutil.NS, dst string, n int, ds ...*Daemon) string {
	tb.Helper()
	out, err := ns.Run("ping", "-c", fmt.Sprint(n), "-i", "0.1", "-w", "10", dst)
	if _, got, ok := testutil.PingCounts(out); err != nil || !ok || got < n {
		tb.Fatalf("ping %s from %s: %v\n%s%s", dst, ns.Name, err, out, Dump(ds...))
	}
	return out
}

// SAStats returns the SA named key ("esp spi 0x00001001 dst 192.0.2.2") in
// st, or the zero SAStats (Key "") when st has none.
func SAStats(st engine.Stats, key string) engine.SAStats {
	for _, s := range st.SAs {
		if s.Key == key {
			return s
		}
	}
	return engine.SAStats{}
}
