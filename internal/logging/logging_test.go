package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestJSONLinesAtLevel(t *testing.T) {
	var b bytes.Buffer
	log, err := New(&b, "json", "warn")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown", "link", "xa0")
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("got %d lines, want 1 (info below warn): %q", len(lines), b.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("not JSON: %v: %s", err, lines[0])
	}
	if m["msg"] != "shown" || m["level"] != "WARN" || m["link"] != "xa0" {
		t.Errorf("line = %v", m)
	}
}

func TestTextDefault(t *testing.T) {
	var b bytes.Buffer
	log, err := New(&b, "", "")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hidden")
	log.Info("started", "queues", 2)
	if got := b.String(); !strings.Contains(got, "level=INFO msg=started queues=2") || strings.Contains(got, "hidden") {
		t.Errorf("text log = %q", got)
	}
}

func TestBadFlags(t *testing.T) {
	for _, c := range []struct{ format, level, want string }{
		{"xml", "info", "--log-format \"xml\": use one of text, json"},
		{"json", "loud", "--log-level \"loud\": use one of debug, info, warn, error"},
	} {
		_, err := New(&bytes.Buffer{}, c.format, c.level)
		if !errors.Is(err, ErrBadFlag) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%q, %q) = %v, want %q", c.format, c.level, err, c.want)
		}
	}
}
