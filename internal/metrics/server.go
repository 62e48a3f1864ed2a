package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ErrNotLoopback: Serve was given an address that is not on loopback and
// ServerOptions.AllowNonLoopback is false.
var ErrNotLoopback = errors.New("metrics address is not a loopback address")

// NewRegistry returns a registry holding c and the Go runtime and process
// collectors (go_*, process_*), ready for Serve.
func NewRegistry(c *Collector) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// ServerOptions tune Serve.
type ServerOptions struct {
	// AllowNonLoopback lets Serve listen on an address other than
	// 127.0.0.0/8, ::1 or "localhost" (including the wildcard ":9470").
	// The counters name SPIs and peer addresses: expose them on purpose.
	AllowNonLoopback bool
	// Logger receives scrape errors; slog.Default() when nil.
	Logger *slog.Logger
}

// CheckAddr validates a host:port to serve metrics on: the port must be
// given, and the host must be a loopback IP or "localhost" unless
// allowNonLoopback. The error is one line saying what to change.
func CheckAddr(addr string, allowNonLoopback bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("metrics address %q: want HOST:PORT, e.g. 127.0.0.1:9470", addr)
	}
	if port == "" {
		return fmt.Errorf("metrics address %q: missing port, e.g. 127.0.0.1:9470", addr)
	}
	if allowNonLoopback {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if host == "" || err != nil || !ip.Unmap().IsLoopback() {
		return fmt.Errorf("%w: %q; use 127.0.0.1:%s or [::1]:%s, or allow other addresses explicitly", ErrNotLoopback, addr, port, port)
	}
	return nil
}

// Server serves /metrics over HTTP until Close.
type Server struct {
	ln   net.Listener
	srv  *http.Server
	done chan error
}

// Serve listens on addr (checked with CheckAddr) and serves g on /metrics
// in the background. Port 0 picks a free port (see Addr). One failing
// source does not fail the scrape: its family is left out and the error
// logged.
func Serve(addr string, g prometheus.Gatherer, opts ServerOptions) (*Server, error) {
	if err := CheckAddr(addr, opts.AllowNonLoopback); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for metrics on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      slogPrinter{log},
		// A slow scraper must not pile up goroutines reading the maps.
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	s := &Server{
		ln:   ln,
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		done: make(chan error, 1),
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the server, waiting up to 5 s for scrapes in progress.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if serr := <-s.done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("stop metrics server: %w", err)
	}
	return nil
}

// slogPrinter adapts a slog.Logger to promhttp's Logger.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Warn("metrics scrape", "error", fmt.Sprint(v...)) }
