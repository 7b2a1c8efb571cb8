package bgptest

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// Latencies collects durations and reports their percentiles as benchmark metrics.
type Latencies []time.Duration

// Percentile returns the p-th percentile (0-100) by nearest rank.
func (l Latencies) Percentile(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Report adds p50 and p99 in microseconds to the benchmark's output.
func (l Latencies) Report(b *testing.B, name string) {
	b.ReportMetric(float64(l.Percentile(50).Microseconds()), fmt.Sprintf("%s-p50-µs", name))
	b.ReportMetric(float64(l.Percentile(99).Microseconds()), fmt.Sprintf("%s-p99-µs", name))
}

// MeasureToggles times, b.N times each, a withdrawal and an announcement of prefix: from the call that decides it
// (set(false) withdraws, set(true) announces) to the router's best-path change. The router is announcing the prefix
// when it is called.
func (r *Router) MeasureToggles(b *testing.B, prefix string, set func(announce bool) error) (withdraw, announce Latencies) {
	changes := r.Changes(b)
	measure := func(on bool) time.Duration {
		start := time.Now()
		if err := set(on); err != nil {
			b.Fatal(err)
		}
		for c := range changes {
			if c.Prefix == prefix && c.Withdrawn == !on {
				return c.At.Sub(start)
			}
		}
		b.Fatal("the router's event stream ended")
		return 0
	}
	for b.Loop() {
		withdraw = append(withdraw, measure(false))
		announce = append(announce, measure(true))
	}
	return withdraw, announce
}
