package testutil

import (
	"regexp"
	"strconv"
)

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// PingCounts reads the summary line of iputils ping's output: how many
// echo requests it sent and how many replies came back. ok is false when
// out has no summary (ping did not get as far as sending).
//
// With -c N and -w DEADLINE ping sends until N replies arrived, and
// replies held back together (behind a neighbour resolution, say) can
// take "received" past N: compare with >=, never match "N received".
func PingCounts(out string) (sent, received int, ok bool) {
	m := pingSummary.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, false
	}
	sent, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return sent, received, true
}
