package promtext

import (
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestPrometheusParsesIt: what the handler writes is what Prometheus's own text parser reads back, values and
// labels included (escaped quotes, backslashes, line breaks), with the process's metrics.
func TestPrometheusParsesIt(t *testing.T) {
	r := NewRegistry()
	g := NewGaugeVec(r, "test_state", "A gauge.\nOn two lines, with a \\.", "peer", "state")
	c := NewCounterVec(r, "test_events_total", "A counter.", "reason")
	bare := NewCounterVec(r, "test_errors_total", "A counter without labels, never incremented.")
	h := NewHistogramVec(r, "test_duration_seconds", "A histogram.", []float64{0.1, 1}, "check")
	AddProcessMetrics(r)
	g.Set(1, "127.0.0.1", `say "hi" \ there`)
	g.Set(0, "::1", "line\nbreak")
	c.Inc("Unhealthy")
	c.Inc("Unhealthy")
	h.Observe(0.05, "web")
	h.Observe(0.1, "web")
	h.Observe(3, "web")
	_ = bare

	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	families, err := p.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatalf("Prometheus cannot parse it: %v\n%s", err, rec.Body.String())
	}
	labels := func(family string, i int) map[string]string {
		out := map[string]string{}
		for _, l := range families[family].GetMetric()[i].GetLabel() {
			out[l.GetName()] = l.GetValue()
		}
		return out
	}
	if f := families["test_state"]; f == nil || len(f.GetMetric()) != 2 || f.GetHelp() != "A gauge.\nOn two lines, with a \\." {
		t.Fatalf("test_state: %v", f)
	}
	found := map[string]float64{}
	for i, m := range families["test_state"].GetMetric() {
		found[labels("test_state", i)["state"]] = m.GetGauge().GetValue()
	}
	if found[`say "hi" \ there`] != 1 || found["line\nbreak"] != 0 || len(found) != 2 {
		t.Errorf("test_state values: %v", found)
	}
	if v := families["test_events_total"].GetMetric()[0].GetCounter().GetValue(); v != 2 {
		t.Errorf("test_events_total %v, want 2", v)
	}
	if v := families["test_errors_total"].GetMetric()[0].GetCounter().GetValue(); v != 0 {
		t.Errorf("test_errors_total %v, want 0", v)
	}
	hist := families["test_duration_seconds"].GetMetric()[0].GetHistogram()
	if hist.GetSampleCount() != 3 || hist.GetSampleSum() != 3.15 || len(hist.GetBucket()) != 3 ||
		hist.GetBucket()[0].GetCumulativeCount() != 2 || hist.GetBucket()[1].GetCumulativeCount() != 2 || hist.GetBucket()[2].GetCumulativeCount() != 3 {
		t.Errorf("histogram: %v", hist)
	}
	for _, name := range []string{"process_cpu_seconds_total", "process_resident_memory_bytes", "process_start_time_seconds",
		"process_open_fds", "process_max_fds", "go_goroutines", "go_memstats_heap_inuse_bytes"} {
		f := families[name]
		if f == nil {
			t.Errorf("no %s", name)
			continue
		}
		// CPU time may still be 0 in a process this young (10 ms ticks); the others cannot.
		m := f.GetMetric()[0]
		if v := m.GetGauge().GetValue() + m.GetCounter().GetValue(); v < 0 || v == 0 && name != "process_cpu_seconds_total" {
			t.Errorf("%s is %v", name, m)
		}
	}
	// Reset forgets the series; the family is then left out, as client_golang does.
	g.Reset()
	rec = httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if strings.Contains(rec.Body.String(), "test_state") {
		t.Errorf("a reset gauge is still exported")
	}
}

// TestConcurrentUse is for the race detector: metrics are written from the agent's loop and effectors while
// Prometheus scrapes.
func TestConcurrentUse(t *testing.T) {
	r := NewRegistry()
	g := NewGaugeVec(r, "g", "g", "l")
	h := NewHistogramVec(r, "h", "h", []float64{1}, "l")
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 200 {
				g.Set(float64(j), string(rune('a'+i)))
				h.Observe(float64(j), "x")
				if j%50 == 0 {
					g.Reset()
				}
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			r.Handler().ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/metrics", nil))
		}
	})
	wg.Wait()
}
