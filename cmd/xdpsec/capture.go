package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/xdpsec/xdpsec/internal/control"
	"github.com/xdpsec/xdpsec/internal/dropcap"
	"github.com/xdpsec/xdpsec/internal/pcap"
)

// opCapture streams the packets the engine drops, as dropcap.Packet events.
const opCapture = "capture"

// captureArgs are the capture op's arguments: reasons as ParseReasons
// reads them ("bad-icv,replay", "all").
type captureArgs struct {
	Reasons string `json:"reasons"`
}

func init() {
	register(&command{
		name:    "capture",
		summary: "write the packets the daemon drops (bad-icv, replay, ...) to a pcap file",
		usage: `Usage: xdpsec capture --reason REASONS -w FILE.pcap [--count N] [--duration D] [--socket PATH]

Asks the running daemon to copy the inbound frames it drops for REASONS
(comma-separated verdicts: bad-icv, replay, no-state, malformed, bad-padding,
bad-seq, expired; or all) and writes them, Ethernet frames as the NIC gave
them, to FILE.pcap (mode 0600) for tshark or Wireshark. It stops after N
packets, after D, or on Ctrl-C, and prints how many it wrote.

The daemon rate-limits the capture (100 packets/s, bursts of 32) so a flood
of forged packets cannot become a second flood; one capture at a time. For
a bad-icv drop the payload may already be overwritten by the failed
decryption; the outer headers (addresses, SPI, sequence number) are intact.

Examples:
  xdpsec capture --reason bad-icv,replay -w drops.pcap --duration 30s
  xdpsec capture --reason all -w drops.pcap --count 10 --socket /run/xdpsec-b/control.sock
  tshark -r drops.pcap -T fields -e esp.spi -e esp.sequence`,
		run: runCapture,
	})
	flagSets["capture"] = func() *flag.FlagSet { return captureFlags().fs }
}

type captureOpts struct {
	fs       *flag.FlagSet
	socket   *string
	reason   *string
	out      *string
	count    *int
	duration *time.Duration
}

func captureFlags() captureOpts {
	fs := flag.NewFlagSet("capture", flag.ContinueOnError)
	return captureOpts{
		fs:       fs,
		socket:   fs.String("socket", control.DefaultPath, "the daemon's control socket"),
		reason:   fs.String("reason", "", "the drop reasons to capture, comma-separated, or all (required)"),
		out:      fs.String("w", "", "the pcap `file` to write (required; created with mode 0600)"),
		count:    fs.Int("count", 0, "stop after this many packets (0: no limit)"),
		duration: fs.Duration("duration", 0, "stop after this long, e.g. 30s (0: until Ctrl-C)"),
	}
}

func runCapture(args []string, stdout, stderr io.Writer) error {
	o := captureFlags()
	pos, err := parseInterspersed(o.fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("capture takes no arguments, got %q", pos[0])
	}
	if *o.reason == "" {
		return usagef("--reason is required (e.g. --reason bad-icv,replay or --reason all)")
	}
	if _, err := dropcap.ParseReasons(*o.reason); err != nil {
		return usagef("--reason: %v", err)
	}
	if *o.out == "" {
		return usagef("-w FILE.pcap is required")
	}
	if *o.count < 0 || *o.duration < 0 {
		return usagef("--count and --duration must not be negative")
	}

	c, err := dialDaemon(*o.socket)
	if err != nil {
		return err
	}
	defer c.Close()
	w, err := pcap.Create(*o.out, pcap.LinkTypeEthernet, pcap.Nanosecond)
	if err != nil {
		return fmt.Errorf("create %s: %w", *o.out, err)
	}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	if *o.duration > 0 {
		var c2 context.CancelFunc
		ctx, c2 = context.WithTimeout(ctx, *o.duration)
		defer c2()
	}
	errEnough := errors.New("enough packets")
	n := 0
	err = c.Stream(ctx, opCapture, captureArgs{Reasons: *o.reason}, func(ev json.RawMessage) error {
		var p dropcap.Packet
		if err := json.Unmarshal(ev, &p); err != nil {
			return fmt.Errorf("bad capture event from the daemon: %w", err)
		}
		if err := dropcap.WritePacket(w, p); err != nil {
			return fmt.Errorf("write %s: %w", *o.out, err)
		}
		n++
		if err := w.Flush(); err != nil {
			return fmt.Errorf("write %s: %w", *o.out, err)
		}
		if *o.count > 0 && n >= *o.count {
			return errEnough
		}
		return nil
	})
	if cerr := w.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("write %s: %w", *o.out, cerr)
	}
	switch {
	case err == nil, errors.Is(err, errEnough), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
	default:
		if n == 0 {
			os.Remove(*o.out)
		}
		return daemonErr(*o.socket, opCapture, err)
	}
	fmt.Fprintf(stdout, "xdpsec capture: %d packet(s) written to %s\n", n, *o.out)
	return nil
}

// serveCapture registers the capture stream op: every client gets the
// drops of the reasons it asked for until it hangs up (one at a time).
func serveCapture(srv *control.Server, dc *dropcap.Capture) {
	srv.HandleStream(opCapture, func(ctx context.Context, args json.RawMessage, send func(any) error) error {
		var a captureArgs
		if err := json.Unmarshal(args, &a); err != nil || a.Reasons == "" {
			return errors.New(`want {"reasons":"bad-icv,replay"} (or "all")`)
		}
		rs, err := dropcap.ParseReasons(a.Reasons)
		if err != nil {
			return err
		}
		err = dc.Run(ctx, rs, dropcap.SinkFunc(func(p dropcap.Packet) error { return send(p) }))
		if errors.Is(err, dropcap.ErrBusy) {
			return fmt.Errorf("%w: one capture at a time (stop the other 'xdpsec capture' first)", err)
		}
		if ctx.Err() != nil {
			return nil
		}
		return err
	})
}
