package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/xdpsec/xdpsec/capabilities"
	"github.com/xdpsec/xdpsec/capabilities/probe"
	"github.com/xdpsec/xdpsec/internal/control"
)

const capsUsage = `Usage:
  xdpsec caps [--link L] [--view hardware|current|parameters] [-j] [--format ndis-v1|ndis-v2]
              [--watch [--count N]] [--probe-native] [--local] [--socket PATH]
  xdpsec caps set [--socket PATH] [-j] PARAM=VALUE ...

caps reports the IPsec offload capabilities as an NDIS miniport does:
the hardware capabilities (what this machine, link, XDP program and engine
can do), the parameters (what the operator asked, NDIS_OFFLOAD_PARAMETERS),
and the current configuration (hardware ∩ parameters, the only view the
datapath obeys). Output is a table with the NDIS member names, JSON (-j),
or the binary NDIS_IPSEC_OFFLOAD_V1/V2 layout as hex (--format ndis-v1:
56 hex digits, ndis-v2: 64; needs --view hardware or current).

When a daemon (xdpsec run) listens on the control socket, caps asks it.
Otherwise caps probes locally: it runs the algorithm self-tests, loads the
XDP program without attaching it (or reads the program xdpsec has attached
to --link) and reads the link; native XDP is tried on the link only with
--probe-native. Without a running engine the hardware view offloads
nothing, and says so under "limit".

--watch prints every change of the configuration (NDIS_STATUS_TASK_OFFLOAD_
CURRENT_CONFIG) as it comes, with its sequence number and reason
(parameters-set, link-down, link-up, mtu-change, queue-change,
xdp-fallback, engine-stop, self-test-failure, hardware-change), the
current state first. With -j each change is one JSON line. Without a
daemon, --watch follows --link's netlink events.

caps set changes parameters in the running daemon. They take effect at
once (the XDP program passes a class switched off to the kernel, and sa
add refuses SAs outside the current view) and live in the daemon's memory
only: a restart, or a reload (SIGHUP), makes the parameters the defaults
plus the config's 'offload PARAM=VALUE' lines again. To keep a setting,
write it there (e.g. 'offload IPsecV2=esp'). caps set without a running
daemon is an error. PARAM is one of
  IPsecV1, IPsecV2, IPsecV2IPv4   = disabled | ah | esp | ah-esp | no-change | 0-4 | NDIS name
  *IPsecOffloadV1IPv4, *IPsecOffloadV2, *IPsecOffloadV2IPv4
                                  = the registry keywords of the three above; their
                                    numbers count as the registry's: 0 disabled, 1 ah,
                                    2 esp, 3 ah-esp (quote them from the shell's glob)
  UdpEsp                          = on | off
  an XFRM algorithm name          = on | off   (DES, 3DES, MD5 and NULL are off until set on)

Examples:
  xdpsec caps
  xdpsec caps --link eth0 --view current -j
  xdpsec caps --view hardware --format ndis-v2
  xdpsec caps --watch -j
  xdpsec caps --watch --count 1 --socket /run/xdpsec-b/control.sock
  xdpsec caps --local --link eth1 --probe-native   # a link no daemon uses; tries driver-mode XDP
  xdpsec caps set IPsecV2=esp 'rfc7539esp(chacha20,poly1305)=off'
  xdpsec caps set '*IPsecOffloadV2=2' -j   # the registry keyword: 2 = ESP`

func init() {
	register(&command{
		name:    "caps",
		summary: "show or set IPsec offload capabilities (NDIS V1/V2 views), watch changes",
		usage:   capsUsage,
		run:     runCaps,
	})
	flagSets["caps"] = func() *flag.FlagSet { fs, _ := capsFlags(); return fs }
}

type capsOptions struct {
	link, view, format, socket string
	json, watch, native, local bool
	count                      int
}

func capsFlags() (*flag.FlagSet, *capsOptions) {
	o := &capsOptions{}
	fs := flag.NewFlagSet("caps", flag.ContinueOnError)
	fs.StringVar(&o.link, "link", "", "the protected link to probe (local probe) or to check the daemon serves")
	fs.StringVar(&o.view, "view", "", "one view: hardware, current or parameters (default: all)")
	fs.BoolVar(&o.json, "j", false, "JSON output (same as --format json)")
	fs.StringVar(&o.format, "format", "", "table, json, ndis-v1 or ndis-v2 (default table)")
	fs.BoolVar(&o.watch, "watch", false, "print every configuration change as it happens")
	fs.IntVar(&o.count, "count", 0, "with --watch: stop after N changes (0: until interrupted)")
	fs.BoolVar(&o.native, "probe-native", false, "local probe: try attaching an XDP_PASS program in driver mode to --link")
	fs.BoolVar(&o.local, "local", false, "probe this machine even when a daemon runs")
	fs.StringVar(&o.socket, "socket", control.DefaultPath, "the daemon's control socket")
	return fs, o
}

func runCaps(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "set" {
		return runCapsSet(args[1:], stdout, stderr)
	}
	fs, o := capsFlags()
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q (to change parameters: xdpsec caps set PARAM=VALUE ...)", pos[0])
	}
	view, format, err := o.viewFormat()
	if err != nil {
		return err
	}
	if o.count < 0 {
		return usagef("--count %d: want 0 (no limit) or more", o.count)
	}
	if o.count > 0 && !o.watch {
		return usagef("--count only applies to --watch")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if !o.local {
		c, err := control.Dial(o.socket)
		switch {
		case err == nil:
			defer c.Close()
			if o.native {
				return usagef("--probe-native only applies to a local probe (the daemon's datapath owns the link's XDP hook); add --local on a link xdpsec does not use")
			}
			return capsFromDaemon(ctx, c, o, view, format, stdout)
		case !errors.Is(err, control.ErrNoDaemon):
			return fmt.Errorf("ask the daemon at %s: %w (or probe locally with --local)", o.socket, err)
		}
	}
	if o.watch && o.link == "" {
		return usagef("--watch without a running daemon follows a link's events: add --link L")
	}
	st, err := probe.Local(probe.LocalOptions{Link: o.link, TryNativeXDP: o.native})
	if err != nil {
		return capsProbeErr(err)
	}
	if !o.watch {
		return capabilities.Render(stdout, st, view, format)
	}
	hub := capabilities.NewHub(st)
	w, err := capabilities.WatchLink(ctx, hub, o.link, nil)
	if err != nil {
		return err
	}
	defer w.Stop()
	sub := hub.Subscribe(64)
	defer sub.Close()
	printed := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.Done():
			return w.Err()
		case ch := <-sub.C:
			if err := printChange(stdout, ch, view, format); err != nil {
				return err
			}
			if printed++; o.count > 0 && printed >= o.count {
				return nil
			}
		}
	}
}

// capsProbeErr adds how to fix the local probe's common failures.
func capsProbeErr(err error) error {
	switch {
	case errors.Is(err, capabilities.ErrNoSuchLink):
		return err
	case os.Geteuid() != 0:
		return fmt.Errorf("%w (the local probe loads the XDP program: run as root, or with CAP_BPF+CAP_NET_ADMIN)", err)
	}
	return err
}

func (o *capsOptions) viewFormat() (capabilities.View, capabilities.Format, error) {
	view, err := capabilities.ParseView(o.view)
	if err != nil {
		return "", "", usagef("--view: %v", err)
	}
	format, err := capabilities.ParseFormat(o.format)
	if err != nil {
		return "", "", usagef("--format: %v", err)
	}
	if o.json {
		if o.format != "" && format != capabilities.FormatJSON {
			return "", "", usagef("-j asks for JSON but --format asks for %s: give one of them", format)
		}
		format = capabilities.FormatJSON
	}
	if (format == capabilities.FormatNDISV1 || format == capabilities.FormatNDISV2) && view != capabilities.ViewHardware && view != capabilities.ViewCurrent {
		return "", "", usagef("--format %s prints one view's binary layout: add --view hardware or --view current", format)
	}
	return view, format, nil
}

func capsFromDaemon(ctx context.Context, c *control.Client, o *capsOptions, view capabilities.View, format capabilities.Format, stdout io.Writer) error {
	checkLink := func(st capabilities.State) error {
		if o.link == "" {
			return nil
		}
		served := ""
		if st.Linux.Link != nil {
			served = st.Linux.Link.Name
		}
		if served != o.link {
			return fmt.Errorf("the daemon at %s serves link %q, not %q (drop --link, or probe %s with --local)", o.socket, served, o.link, o.link)
		}
		return nil
	}
	if !o.watch {
		ch, err := capabilities.ControlGet(c)
		if err != nil {
			return daemonErr(o.socket, capabilities.OpGet, err)
		}
		if err := checkLink(ch.State); err != nil {
			return err
		}
		return capabilities.Render(stdout, ch.State, view, format)
	}
	printed := 0
	errDone := errors.New("count reached")
	err := capabilities.ControlWatch(ctx, c, func(ch capabilities.Change) error {
		if printed == 0 {
			if err := checkLink(ch.State); err != nil {
				return err
			}
		}
		if err := printChange(stdout, ch, view, format); err != nil {
			return err
		}
		if printed++; o.count > 0 && printed >= o.count {
			return errDone
		}
		return nil
	})
	switch {
	case err == nil, errors.Is(err, errDone), errors.Is(err, context.Canceled):
		return nil
	}
	return daemonErr(o.socket, capabilities.OpWatch, err)
}

func daemonErr(socket, op string, err error) error {
	if errors.Is(err, control.ErrUnknownOp) {
		return fmt.Errorf("the daemon at %s does not serve %s (an older xdpsec run? restart it, or probe locally with --local)", socket, op)
	}
	return fmt.Errorf("%s from the daemon at %s: %w", op, socket, err)
}

// printChange writes one change: as a JSON line (the document of the view
// plus seq, reason and detail), as "SEQ REASON HEX" for the NDIS formats,
// or as a "change" line followed by the table.
func printChange(w io.Writer, ch capabilities.Change, view capabilities.View, format capabilities.Format) error {
	switch format {
	case capabilities.FormatJSON:
		doc := capabilities.JSONDocument(ch.State, view)
		doc["seq"], doc["reason"] = ch.Seq, ch.Reason.String()
		if ch.Detail != "" {
			doc["detail"] = ch.Detail
		}
		b, err := json.Marshal(doc)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case capabilities.FormatNDISV1, capabilities.FormatNDISV2:
		var b bytes.Buffer
		if err := capabilities.Render(&b, ch.State, view, format); err != nil {
			return err
		}
		_, err := fmt.Fprintf(w, "%d %s %s\n", ch.Seq, ch.Reason, strings.TrimSpace(b.String()))
		return err
	}
	line := fmt.Sprintf("change %d %s", ch.Seq, ch.Reason)
	if ch.Detail != "" {
		line += ": " + ch.Detail
	}
	if _, err := fmt.Fprintln(w, line); err != nil {
		return err
	}
	if err := capabilities.Render(w, ch.State, view, format); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w)
	return err
}

func runCapsSet(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("caps set", flag.ContinueOnError)
	socket := fs.String("socket", control.DefaultPath, "the daemon's control socket")
	asJSON := fs.Bool("j", false, "print the resulting parameters as JSON")
	settings, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(settings) == 0 {
		return usagef("caps set needs at least one PARAM=VALUE, e.g. IPsecV2=esp or cbc(des)=on")
	}
	// Check locally first so a typo gets the same clear error with or
	// without a daemon.
	if _, err := capabilities.ParseSettings(settings); err != nil {
		return usageError{err.Error()}
	}
	c, err := control.Dial(*socket)
	if err != nil {
		if errors.Is(err, control.ErrNoDaemon) {
			return fmt.Errorf("caps set needs a running daemon (xdpsec run): parameters live in its memory and nothing listens on %s", *socket)
		}
		return fmt.Errorf("ask the daemon at %s: %w", *socket, err)
	}
	defer c.Close()
	ch, err := capabilities.ControlSet(c, settings)
	if err != nil {
		return daemonErr(*socket, capabilities.OpSet, err)
	}
	if *asJSON {
		return capabilities.Render(stdout, ch.State, capabilities.ViewParameters, capabilities.FormatJSON)
	}
	fmt.Fprintf(stdout, "parameters set (change %d); in memory until the daemon restarts or reloads: to keep them, add to its config: offload %s\n", ch.Seq, strings.Join(settings, " "))
	return capabilities.Render(stdout, ch.State, capabilities.ViewParameters, capabilities.FormatTable)
}
