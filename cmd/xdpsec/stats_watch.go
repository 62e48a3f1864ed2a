package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/xdpsec/xdpsec/internal/control"
	"github.com/xdpsec/xdpsec/userspace/engine"
)

// watchOpts are the flags of `xdpsec stats --watch`.
type watchOpts struct {
	watch    *bool
	interval *time.Duration
	samples  *int
}

func addWatchFlags(fs *flag.FlagSet) watchOpts {
	return watchOpts{
		watch:    fs.Bool("watch", false, "print rates (packets/s, bytes/s per SA and per reason) every --interval until Ctrl-C"),
		interval: fs.Duration("interval", time.Second, "the --watch interval, e.g. 500ms or 5s"),
		samples:  fs.Int("samples", 0, "with --watch: stop after this many intervals (0: until Ctrl-C)"),
	}
}

// saRate is one SA's rates over an interval.
type saRate struct {
	Key     string  `json:"key"`
	Dir     string  `json:"dir"`
	PPS     float64 `json:"pps"`
	BytesPS float64 `json:"bytes_per_s"`
	// ErrorsPS are the SA's non-ok verdicts per second, by verdict.
	ErrorsPS map[string]float64 `json:"errors_per_s,omitempty"`
}

// statsRates are the rates between two stats snapshots; `stats --watch -j`
// prints one per interval as a JSON line. Only non-zero rates are kept in
// the maps; every SA is listed.
type statsRates struct {
	Time        time.Time                     `json:"time"`
	IntervalS   float64                       `json:"interval_s"`
	SAs         []saRate                      `json:"sas"`
	InVerdictPS map[string]float64            `json:"in_verdicts_per_s"`
	CounterPS   map[string]float64            `json:"counters_per_s"`
	XDPPS       map[string]map[string]float64 `json:"xdp_per_s"`
}

// delta is cur-prev, or cur when the counter went back (the daemon was
// restarted or the SA re-added: its counters started again from zero).
func delta(cur, prev uint64) uint64 {
	if cur < prev {
		return cur
	}
	return cur - prev
}

func rateMap(cur, prev map[string]uint64, secs float64, skip string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range cur {
		if k == skip {
			continue
		}
		if d := delta(v, prev[k]); d != 0 {
			out[k] = float64(d) / secs
		}
	}
	return out
}

// rates computes the rates from prev to cur, taken secs seconds apart. An
// SA absent from prev counts from zero (it was added during the interval).
func rates(prev, cur engine.Stats, secs float64, at time.Time) statsRates {
	r := statsRates{
		Time: at, IntervalS: secs, SAs: []saRate{},
		InVerdictPS: rateMap(cur.InVerdicts, prev.InVerdicts, secs, ""),
		CounterPS:   rateMap(cur.Counters, prev.Counters, secs, ""),
		XDPPS:       map[string]map[string]float64{},
	}
	prevSA := map[string]engine.SAStats{}
	for _, s := range prev.SAs {
		prevSA[s.Key] = s
	}
	for _, s := range cur.SAs {
		p := prevSA[s.Key]
		if p.Packets > s.Packets { // re-added: every counter restarted
			p = engine.SAStats{}
		}
		sr := saRate{Key: s.Key, Dir: s.Dir,
			PPS:     float64(delta(s.Packets, p.Packets)) / secs,
			BytesPS: float64(delta(s.Bytes, p.Bytes)) / secs}
		if e := rateMap(s.Verdicts, p.Verdicts, secs, "ok"); len(e) > 0 {
			sr.ErrorsPS = e
		}
		r.SAs = append(r.SAs, sr)
	}
	prevLink := map[string]map[string]uint64{}
	for _, l := range prev.Links {
		prevLink[l.Name] = l.Reasons
	}
	for _, l := range cur.Links {
		if m := rateMap(l.Reasons, prevLink[l.Name], secs, ""); len(m) > 0 {
			r.XDPPS[l.Name] = m
		}
	}
	return r
}

// watchStats samples fetch every interval and prints the rates of each
// interval (text, or one JSON object per line) until ctx ends or samples
// intervals were printed (0: no limit). Rates divide by the time measured
// between the samples, not by the nominal interval.
func watchStats(ctx context.Context, w io.Writer, fetch func() (engine.Stats, error), interval time.Duration, samples int, asJSON bool) error {
	prev, err := fetch()
	if err != nil {
		return err
	}
	prevAt := time.Now()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for n := 0; samples == 0 || n < samples; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		cur, err := fetch()
		if err != nil {
			return err
		}
		now := time.Now()
		r := rates(prev, cur, now.Sub(prevAt).Seconds(), now)
		prev, prevAt = cur, now
		if asJSON {
			err = writeJSON(w, r)
		} else {
			err = printRates(w, r)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func printRates(w io.Writer, r statsRates) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%.2fs)\n", r.Time.Format("15:04:05"), r.IntervalS)
	idle := true
	for _, s := range r.SAs {
		if s.PPS == 0 && len(s.ErrorsPS) == 0 {
			continue
		}
		idle = false
		fmt.Fprintf(&b, "  sa %s (%s): %s pkt/s %s/s", s.Key, s.Dir, rateText(s.PPS), bytesText(s.BytesPS))
		for _, k := range slices.Sorted(maps.Keys(s.ErrorsPS)) {
			fmt.Fprintf(&b, " %s %s/s", k, rateText(s.ErrorsPS[k]))
		}
		b.WriteByte('\n')
	}
	line := func(title string, m map[string]float64) {
		if len(m) == 0 {
			return
		}
		idle = false
		fmt.Fprintf(&b, "  %s/s:", title)
		for _, k := range slices.Sorted(maps.Keys(m)) {
			fmt.Fprintf(&b, " %s %s", k, rateText(m[k]))
		}
		b.WriteByte('\n')
	}
	line("inbound verdicts", r.InVerdictPS)
	line("engine", r.CounterPS)
	for _, l := range slices.Sorted(maps.Keys(r.XDPPS)) {
		line("xdp "+l, r.XDPPS[l])
	}
	if idle {
		b.WriteString("  (idle)\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func rateText(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	case v == float64(int64(v)):
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.1f", v)
}

func bytesText(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.2f GB", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.2f MB", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1f kB", v/1e3)
	}
	return fmt.Sprintf("%.0f B", v)
}

func runStatsWatch(socket string, wo watchOpts, asJSON bool, stdout io.Writer) error {
	if *wo.interval < 10*time.Millisecond {
		return usagef("--interval %s is too short: use 10ms or more", *wo.interval)
	}
	if *wo.samples < 0 {
		return usagef("--samples must not be negative")
	}
	c, err := dialDaemon(socket)
	if err != nil {
		return err
	}
	defer c.Close()
	fetch := func() (engine.Stats, error) {
		var st engine.Stats
		if err := c.Call(opStats, nil, &st); err != nil {
			return st, daemonErr(socket, opStats, err)
		}
		return st, nil
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	return watchStats(ctx, stdout, fetch, *wo.interval, *wo.samples, asJSON)
}

// dialDaemon connects to the daemon's control socket with errors that say
// what to do.
func dialDaemon(socket string) (*control.Client, error) {
	c, err := control.Dial(socket)
	if err != nil {
		if errors.Is(err, control.ErrNoDaemon) {
			return nil, fmt.Errorf("no daemon at %s: start one with 'xdpsec run --config FILE' (or give --socket)", socket)
		}
		return nil, fmt.Errorf("connect to the daemon at %s: %w", socket, err)
	}
	return c, nil
}
