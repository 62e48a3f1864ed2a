// Package logging builds the daemon's log/slog logger from the command
// line's --log-format and --log-level.
//
// xdpsec logs lifecycle events only (start, stop, reload, link and
// capability changes, errors of the control plane): never one line per
// packet, and never key bytes. Counters are read with `xdpsec stats` or
// Prometheus, not from the log.
package logging

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Formats are the values --log-format accepts.
var Formats = []string{"text", "json"}

// Levels are the values --log-level accepts.
var Levels = []string{"debug", "info", "warn", "error"}

// ErrBadFlag marks an unknown format or level; the message names the
// valid words.
var ErrBadFlag = errors.New("bad logging flag")

// ParseLevel reads a level name (case-insensitive).
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%w: --log-level %q: use one of %s", ErrBadFlag, s, strings.Join(Levels, ", "))
}

// New returns a logger writing to w in format ("text" or "json", "" is
// text) at level and above.
func New(w io.Writer, format, level string) (*slog.Logger, error) {
	lv, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("%w: --log-format %q: use one of %s", ErrBadFlag, format, strings.Join(Formats, ", "))
}
