package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/xdpsec/xdpsec/capabilities"
	"github.com/xdpsec/xdpsec/internal/control"
	"github.com/xdpsec/xdpsec/internal/dropcap"
	"github.com/xdpsec/xdpsec/internal/logging"
	"github.com/xdpsec/xdpsec/userspace/engine"
	"github.com/xdpsec/xdpsec/userspace/sad"
)

// Control socket ops the daemon serves besides the capabilities' caps.*.
const (
	opSAAdd      = "sa.add"
	opSAUpdate   = "sa.update"
	opSADel      = "sa.del"
	opSAGet      = "sa.get"
	opSAList     = "sa.list"
	opPolicyAdd  = "policy.add"
	opPolicyDel  = "policy.del"
	opPolicyList = "policy.list"
	opStats      = "stats"
	opReload     = "reload"
)

// wordsArgs carries a spec as words, as the command line gave them.
type wordsArgs struct {
	Words []string `json:"words"`
}

// policyInfo is one policy as policy.list returns it.
type policyInfo struct {
	Action string `json:"action"`
	Spec   string `json:"spec"`
}

func init() {
	register(&command{
		name:    "run",
		summary: "run the IPsec engine (the daemon) with a config file",
		usage: `Usage: xdpsec run --config FILE [--socket PATH] [--metrics ADDR] [--pprof ADDR]
                  [--log-format text|json] [--log-level LEVEL]

Attaches the XDP datapath to the config's links, creates the TUN with its
addresses and the routes of the outbound policies, starts one worker per
queue and serves the control socket (xdpsec sa|policy|stats|caps talk to it).
SIGTERM or SIGINT stops and removes everything it created (the XDP program
stays pinned with 'fail-open'); SIGHUP reloads the SAs and policies of the
config: unchanged SAs keep flowing, changed ones keep their sequence numbers
and replay window. The config format is in examples/README.md.

The config's 'offload PARAM=VALUE' lines are the offload parameters that
persist (what registry keywords are to an NDIS driver): applied at start
before any SA is admitted, so an SA they forbid stops the start with the
blocking parameter named. A reload makes the parameters the defaults plus
those lines again, undoing a runtime 'xdpsec caps set' the file does not
repeat (as it deletes SAs added with 'xdpsec sa add' that the file lacks),
and publishes a parameters-set change only when they change.

Observability: --metrics serves Prometheus counters (per SA, per reason,
per AF_XDP queue, xdpsec_xfrm_stat), --pprof Go's profiler, both on loopback;
'xdpsec capture' writes dropped packets; logs are lifecycle events only (no
line per packet, never key bytes). See docs/OPERATIONS.md.

Examples:
  xdpsec run --config examples/tunnel-a.conf
  xdpsec run --config /etc/xdpsec/xdpsec.conf --metrics 127.0.0.1:9470 --log-format json
  xdpsec run --config b.conf --socket /run/xdpsec-b/control.sock --log-level debug --pprof 127.0.0.1:6060
  xdpsec run --config /etc/xdpsec/xdpsec.conf --metrics 192.0.2.1:9470 --metrics-allow-remote`,
		run: runDaemon,
	})
	flagSets["run"] = func() *flag.FlagSet { fs, _, _, _ := runFlags(); return fs }
}

func runFlags() (*flag.FlagSet, *string, *string, *observeFlags) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cfg := fs.String("config", "", "the config file (SAs, policies, links; see examples/README.md)")
	socket := fs.String("socket", "", "the control socket (default: the config's 'control' line, else "+control.DefaultPath+")")
	return fs, cfg, socket, addObserveFlags(fs)
}

func runDaemon(args []string, stdout, stderr io.Writer) error {
	fs, cfgPath, socket, obs := runFlags()
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q (give the config with --config FILE)", pos[0])
	}
	if *cfgPath == "" {
		return usagef("--config FILE is required")
	}
	if err := obs.check(); err != nil {
		return err
	}
	log, err := logging.New(os.Stderr, obs.logFormat, obs.logLevel)
	if err != nil {
		return usagef("%v", err)
	}
	fc, err := engine.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root (XDP, AF_XDP, TUN and the control socket): run it with sudo")
	}
	path := *socket
	if path == "" {
		path = fc.Control
	}
	if path == "" {
		path = control.DefaultPath
	}
	srv, err := control.Listen(path)
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	defer srv.Close()

	fc.Logger = log
	// A dropped packet never outgrows its AF_XDP frame: keep it whole.
	drops := dropcap.New(dropcap.Config{SnapLen: max(dropcap.DefaultSnapLen, fc.FrameSize)})
	fc.DropCapture = drops
	// Signals are caught before Start, so a SIGTERM during start-up still
	// stops cleanly.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	// The config's `offload` lines are set before any SA is admitted, so
	// an SA they forbid stops the start with the parameter that blocks it.
	cfg := fc.Config
	if len(fc.Offload) > 0 {
		u := fc.OffloadUpdate
		cfg.Parameters = &u
		cfg.ParametersDetail = "config " + *cfgPath
	}
	e, err := engine.Start(cfg)
	if err != nil {
		if hint := privilegeHint(err); hint != "" {
			return fmt.Errorf("%w%s", err, hint)
		}
		if errors.Is(err, capabilities.ErrNotOffloadable) {
			return fmt.Errorf("%s: %w", *cfgPath, err)
		}
		return err
	}
	defer e.Stop()
	if len(fc.Offload) > 0 {
		log.Info("offload parameters set from "+*cfgPath, "offload", strings.Join(fc.Offload, " "),
			"changed", strings.Join(capabilities.ParameterChanges(capabilities.DefaultParameters(), e.Capabilities().State().Parameters), " "))
	}
	// One reload at a time, whether SIGHUP or `xdpsec reload` asks.
	var reloadMu sync.Mutex
	reload := func() (reloadResult, error) {
		reloadMu.Lock()
		defer reloadMu.Unlock()
		res, err := reloadConfig(e, *cfgPath, log)
		if err != nil {
			log.Error("reload "+*cfgPath, "err", err)
			return res, err
		}
		log.Info("reloaded "+*cfgPath, "summary", fmt.Sprintf("%+v", res.ReloadSummary))
		return res, nil
	}
	serveEngine(srv, e, reload)
	serveCapture(srv, drops)
	// The observers stop before the engine: metrics read its sockets.
	var observers []func()
	stopObservers := func() {
		for _, stop := range observers {
			stop()
		}
		observers = nil
	}
	defer stopObservers()
	if obs.metrics != "" {
		stop, err := startMetrics(obs.metrics, obs.metricsAllowRemote, e, log)
		if err != nil {
			return err
		}
		observers = append(observers, stop)
	}
	if obs.pprof != "" {
		stop, err := startPprof(obs.pprof, log)
		if err != nil {
			return err
		}
		observers = append(observers, stop)
	}
	if h := e.Capabilities(); h != nil {
		capabilities.ServeControl(srv, h)
		// Link down/up, MTU, queue and XDP mode changes reach the hub (and
		// `xdpsec caps --watch`) as change events.
		for _, name := range fc.Links {
			w, err := capabilities.WatchLink(context.Background(), h, name, nil)
			if err != nil {
				return fmt.Errorf("watch link %s for capability changes: %w", name, err)
			}
			observers = append(observers, w.Stop)
		}
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	fmt.Fprintf(stdout, "xdpsec: running on %v, control socket %s\n", fc.Links, path)

	for {
		select {
		case err := <-served:
			return fmt.Errorf("control socket stopped: %w", err)
		case gone := <-e.Gone():
			// A deleted link took its XDP program and sockets with it:
			// exit non-zero (systemd restarts the unit) rather than run
			// on without carrying its traffic.
			log.Error("stopping: a link is gone", "err", gone.Error())
			stopObservers()
			e.Stop()
			srv.WaitStreams(time.Second)
			srv.Close()
			<-served
			return gone
		case s := <-sigs:
			if s != syscall.SIGHUP {
				log.Info("stopping", "signal", s.String())
				stopObservers()
				// Stop publishes engine-stop to caps watchers; let their
				// streams deliver it before the socket closes.
				err := e.Stop()
				srv.WaitStreams(time.Second)
				srv.Close()
				<-served
				return err
			}
			reload() // it logs what it did
		}
	}
}

// reloadResult is what a reload did: the engine's summary of SAs and
// policies, and the offload settings it changed (empty: none).
type reloadResult struct {
	engine.ReloadSummary
	OffloadChanged []string `json:"OffloadChanged,omitempty"`
}

// reloadConfig reads the config again and makes the daemon match it:
// offload parameters first (so new SAs are judged by them), then SAs and
// policies. A config that does not load changes nothing.
func reloadConfig(e *engine.Engine, path string, log *slog.Logger) (reloadResult, error) {
	nc, err := engine.LoadConfig(path)
	if err != nil {
		return reloadResult{}, err
	}
	changed, err := applyOffload(e, nc, path, false, log)
	if err != nil {
		return reloadResult{}, err
	}
	sum, err := e.Reload(nc.SAs, nc.Policies)
	warnOutsideParameters(e, log)
	return reloadResult{ReloadSummary: sum, OffloadChanged: changed}, err
}

// applyOffload makes the daemon's offload parameters what fc asks for:
// the defaults with its `offload` lines applied. At start it runs before
// any SA is admitted; on reload it also undoes a runtime `caps set` the
// file does not repeat (the file is the whole truth, as it is for SAs),
// and publishes parameters-set only when the parameters change. It
// returns the settings that changed.
func applyOffload(e *engine.Engine, fc *engine.FileConfig, path string, atStart bool, log *slog.Logger) ([]string, error) {
	h := e.Capabilities()
	if h == nil {
		if len(fc.Offload) > 0 {
			return nil, fmt.Errorf("%s: `offload` lines need the capabilities probe, which failed at start (see the log): remove them, or fix the probe and restart", path)
		}
		return nil, nil
	}
	want, err := capabilities.DefaultParameters().Update(fc.OffloadUpdate)
	if err != nil {
		return nil, fmt.Errorf("%s: offload: %w", path, err)
	}
	old := h.State().Parameters
	if old.Equal(want) && (!atStart || len(fc.Offload) == 0) {
		return nil, nil // nothing to set: publish no change
	}
	if _, err := h.ResetParameters(fc.OffloadUpdate, "config "+path); err != nil {
		return nil, fmt.Errorf("%s: offload: %w", path, err)
	}
	changed := capabilities.ParameterChanges(old, want)
	shown := strings.Join(changed, " ")
	if shown == "" {
		shown = "none"
	}
	log.Info("offload parameters set from "+path, "offload", strings.Join(fc.Offload, " "), "changed", shown)
	return changed, nil
}

// warnOutsideParameters logs each installed SA the current offload view no
// longer allows. Such an SA stays installed (as after a runtime caps set):
// a class switched off is passed to the kernel by the XDP program, but an
// algorithm switched off only refuses new SAs, so the operator is told.
func warnOutsideParameters(e *engine.Engine, log *slog.Logger) {
	h := e.Capabilities()
	if h == nil {
		return
	}
	st, err := e.Stats()
	if err != nil {
		return
	}
	inbound := map[string]bool{}
	for _, s := range st.SAs {
		inbound[s.Key] = s.Dir == "in"
	}
	state := h.State()
	for _, a := range e.SAD().List() {
		k := a.Key().String()
		dir := capabilities.SAOutbound
		if inbound[k] {
			dir = capabilities.SAInbound
		}
		p := a.Spec().Params()
		if err := state.Allows(&p, dir); err != nil {
			log.Warn("installed SA outside the offload parameters (it stays until deleted or rekeyed)", "sa", k, "why", err.Error())
		}
	}
}

// serveEngine registers the engine's ops on the control socket.
func serveEngine(srv *control.Server, e *engine.Engine, reload func() (reloadResult, error)) {
	words := func(args json.RawMessage) ([]string, error) {
		var a wordsArgs
		if err := json.Unmarshal(args, &a); err != nil || len(a.Words) == 0 {
			return nil, errors.New(`want {"words":[...]}: the spec as words`)
		}
		return a.Words, nil
	}
	saKey := func(args json.RawMessage) (sad.SAKey, error) {
		w, err := words(args)
		if err != nil {
			return sad.SAKey{}, err
		}
		s, err := sad.ParseSAForLookup(w)
		if err != nil {
			return sad.SAKey{}, err
		}
		return s.Key(), nil
	}
	saSpec := func(args json.RawMessage) (*sad.SASpec, error) {
		w, err := words(args)
		if err != nil {
			return nil, err
		}
		return sad.ParseSA(w)
	}
	polSpec := func(args json.RawMessage) (*sad.PolicySpec, error) {
		w, err := words(args)
		if err != nil {
			return nil, err
		}
		return sad.ParsePolicy(w)
	}
	srv.Handle(opSAAdd, func(_ context.Context, args json.RawMessage) (any, error) {
		s, err := saSpec(args)
		if err != nil {
			return nil, err
		}
		return s.Key().String(), e.AddSA(s)
	})
	srv.Handle(opSAUpdate, func(_ context.Context, args json.RawMessage) (any, error) {
		s, err := saSpec(args)
		if err != nil {
			return nil, err
		}
		return s.Key().String(), e.UpdateSA(s)
	})
	srv.Handle(opSADel, func(_ context.Context, args json.RawMessage) (any, error) {
		k, err := saKey(args)
		if err != nil {
			return nil, err
		}
		return k.String(), e.DeleteSA(k)
	})
	srv.Handle(opSAList, func(context.Context, json.RawMessage) (any, error) {
		st, err := e.Stats()
		if err != nil {
			return nil, err
		}
		return st.SAs, nil
	})
	srv.Handle(opSAGet, func(_ context.Context, args json.RawMessage) (any, error) {
		k, err := saKey(args)
		if err != nil {
			return nil, err
		}
		st, err := e.Stats()
		if err != nil {
			return nil, err
		}
		for _, s := range st.SAs {
			if s.Key == k.String() {
				return s, nil
			}
		}
		return nil, fmt.Errorf("SA %s: %w (see xdpsec sa list)", k, sad.ErrNotFound)
	})
	srv.Handle(opPolicyAdd, func(_ context.Context, args json.RawMessage) (any, error) {
		p, err := polSpec(args)
		if err != nil {
			return nil, err
		}
		return p.String(), e.AddPolicy(p)
	})
	srv.Handle(opPolicyDel, func(_ context.Context, args json.RawMessage) (any, error) {
		p, err := polSpec(args)
		if err != nil {
			return nil, err
		}
		return p.String(), e.DeletePolicy(p)
	})
	srv.Handle(opPolicyList, func(context.Context, json.RawMessage) (any, error) {
		out := []policyInfo{}
		for _, p := range e.SPD().List() {
			out = append(out, policyInfo{Action: p.Action().String(), Spec: p.Spec().String()})
		}
		return out, nil
	})
	srv.Handle(opStats, func(context.Context, json.RawMessage) (any, error) {
		return e.Stats()
	})
	srv.Handle(opReload, func(context.Context, json.RawMessage) (any, error) {
		return reload()
	})
}
