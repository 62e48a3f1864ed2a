package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/xdpsec/xdpsec/internal/metrics"
	"github.com/xdpsec/xdpsec/userspace/engine"
)

// observeFlags are run's observability settings.
type observeFlags struct {
	metrics            string
	metricsAllowRemote bool
	pprof              string
	logFormat          string
	logLevel           string
}

// check validates the addresses before the engine starts, so a typo costs
// one line and no attach.
func (o *observeFlags) check() error {
	if o.metrics != "" {
		if err := metrics.CheckAddr(o.metrics, o.metricsAllowRemote); err != nil {
			if errors.Is(err, metrics.ErrNotLoopback) {
				return usagef("--metrics %s: %v (add --metrics-allow-remote to expose SPIs and peers on purpose)", o.metrics, err)
			}
			return usagef("--metrics %s: %v", o.metrics, err)
		}
	}
	if o.pprof != "" {
		if err := metrics.CheckAddr(o.pprof, false); err != nil {
			return usagef("--pprof %s: %v (pprof is served on loopback only: use 127.0.0.1:PORT and an ssh tunnel)", o.pprof, err)
		}
	}
	return nil
}

// startMetrics serves the engine's counters on addr. The returned stop
// closes the server and forgets the sockets: call it before e.Stop, which
// closes them.
func startMetrics(addr string, allowRemote bool, e *engine.Engine, log *slog.Logger) (stop func(), _ error) {
	c := metrics.New(metrics.Options{
		SAs: e.SAD(),
		Engine: metrics.EngineSourceFunc(func() (metrics.EngineCounters, error) {
			st, err := e.Stats()
			return metrics.EngineCounters{InVerdicts: st.InVerdicts, Counters: st.Counters}, err
		}),
	})
	links := e.LinkDatapaths()
	for _, l := range links {
		c.AddLink(l.Name, l.Datapath)
	}
	socks := e.QueueSockets()
	for _, s := range socks {
		c.AddSocket(s.Link, s.Queue, s.Socket)
	}
	srv, err := metrics.Serve(addr, metrics.NewRegistry(c), metrics.ServerOptions{AllowNonLoopback: allowRemote, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("serve metrics on %s: %w", addr, err)
	}
	log.Info("metrics served", "addr", "http://"+srv.Addr().String()+"/metrics")
	return func() {
		srv.Close()
		for _, s := range socks {
			c.RemoveSocket(s.Link, s.Queue)
		}
		for _, l := range links {
			c.RemoveLink(l.Name)
		}
	}, nil
}

// startPprof serves Go's net/http/pprof handlers under /debug/pprof/ on
// addr (checked to be loopback), on a mux of its own: nothing else is
// served there, and the metrics server never serves pprof.
func startPprof(addr string, log *slog.Logger) (stop func(), _ error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("serve pprof on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	log.Info("pprof served", "addr", "http://"+ln.Addr().String()+"/debug/pprof/")
	return func() { srv.Close() }, nil
}

// addObserveFlags defines run's observability flags on fs.
func addObserveFlags(fs *flag.FlagSet) *observeFlags {
	o := &observeFlags{}
	fs.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics on `ADDR`, e.g. 127.0.0.1:9470 (default off; loopback only unless --metrics-allow-remote)")
	fs.BoolVar(&o.metricsAllowRemote, "metrics-allow-remote", false, "allow --metrics on a non-loopback address (the metrics name SPIs and peers)")
	fs.StringVar(&o.pprof, "pprof", "", "serve Go's pprof on `ADDR` under /debug/pprof/, loopback only, e.g. 127.0.0.1:6060 (default off)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json (to stderr)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return o
}
