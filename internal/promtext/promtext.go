// Package promtext is the part of Prometheus's client a small daemon needs: gauges, counters and histograms with
// label values, and a handler that writes them in the text exposition format (version 0.0.4), plus the process's
// own CPU, memory, file descriptors and goroutines. The node agent uses it instead of client_golang, whose
// registry, collectors and protobuf types cost the agent on every node megabytes of resident memory (issue 16).
package promtext

import (
	"bufio"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Registry holds metric families and writes them in the order they were added. A Registry is safe for concurrent
// use; so is every metric it makes.
type Registry struct {
	mu       sync.Mutex
	families []writer
}

type writer interface{ write(w *bufio.Writer) }

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{} }

func (r *Registry) add(w writer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.families = append(r.families, w)
}

// Handler serves the registry's metrics.
func (r *Registry) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		bw := bufio.NewWriter(w)
		r.WriteTo(bw)
		_ = bw.Flush()
	})
}

// WriteTo writes every family.
func (r *Registry) WriteTo(w *bufio.Writer) {
	r.mu.Lock()
	families := slices.Clone(r.families)
	r.mu.Unlock()
	for _, f := range families {
		f.write(w)
	}
}

// desc is a family's name, help, type and label names.
type desc struct {
	name, help, typ string
	labels          []string
}

func (d desc) header(w *bufio.Writer) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", d.name, escapeHelp(d.help), d.name, d.typ)
}

// key joins label values into a map key; \xff never occurs in valid UTF-8.
func key(values []string) string { return strings.Join(values, "\xff") }

func (d desc) check(values []string) {
	if len(values) != len(d.labels) {
		panic(fmt.Sprintf("%s: %d label values for %d labels", d.name, len(values), len(d.labels)))
	}
}

// labelPairs renders {a="x",b="y"} with extra pairs appended (a histogram's le); "" without any.
func labelPairs(names, values []string, extra ...string) string {
	if len(names) == 0 && len(extra) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=\"%s\"", n, escapeValue(values[i]))
	}
	for i := 0; i+1 < len(extra); i += 2 {
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=\"%s\"", extra[i], escapeValue(extra[i+1]))
	}
	b.WriteByte('}')
	return b.String()
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	valueEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeValue(s string) string { return valueEscaper.Replace(s) }

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// series is a family of one value per label set: gauges and counters.
type series struct {
	desc
	mu     sync.Mutex
	values map[string]*sample
}

type sample struct {
	labels []string
	v      float64
}

func newSeries(r *Registry, d desc) *series {
	s := &series{desc: d, values: map[string]*sample{}}
	r.add(s)
	return s
}

func (s *series) update(values []string, f func(float64) float64) {
	s.check(values)
	k := key(values)
	s.mu.Lock()
	defer s.mu.Unlock()
	x := s.values[k]
	if x == nil {
		x = &sample{labels: slices.Clone(values)}
		s.values[k] = x
	}
	x.v = f(x.v)
}

func (s *series) write(w *bufio.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.values) == 0 && len(s.labels) > 0 {
		return
	}
	s.header(w)
	if len(s.labels) == 0 && len(s.values) == 0 {
		fmt.Fprintf(w, "%s 0\n", s.name)
		return
	}
	for _, k := range slices.Sorted(maps.Keys(s.values)) {
		x := s.values[k]
		fmt.Fprintf(w, "%s%s %s\n", s.name, labelPairs(s.labels, x.labels), formatFloat(x.v))
	}
}

// GaugeVec is a gauge per label set.
type GaugeVec struct{ s *series }

// NewGaugeVec adds a gauge family to the registry.
func NewGaugeVec(r *Registry, name, help string, labels ...string) *GaugeVec {
	return &GaugeVec{newSeries(r, desc{name: name, help: help, typ: "gauge", labels: labels})}
}

// Set sets the gauge of the label values.
func (g *GaugeVec) Set(v float64, values ...string) {
	g.s.update(values, func(float64) float64 { return v })
}

// Reset forgets every series, so that what left the node's spec stops being exported.
func (g *GaugeVec) Reset() {
	g.s.mu.Lock()
	defer g.s.mu.Unlock()
	clear(g.s.values)
}

// CounterVec is a counter per label set; with no labels it is one counter.
type CounterVec struct{ s *series }

// NewCounterVec adds a counter family to the registry; its name should end in _total.
func NewCounterVec(r *Registry, name, help string, labels ...string) *CounterVec {
	return &CounterVec{newSeries(r, desc{name: name, help: help, typ: "counter", labels: labels})}
}

// Inc adds one to the counter of the label values.
func (c *CounterVec) Inc(values ...string) {
	c.s.update(values, func(v float64) float64 { return v + 1 })
}

// HistogramVec is a histogram per label set, with fixed buckets.
type HistogramVec struct {
	desc
	buckets []float64
	mu      sync.Mutex
	values  map[string]*histogram
}

type histogram struct {
	labels []string
	counts []uint64 // per bucket, not cumulative; the last is +Inf
	sum    float64
	count  uint64
}

// NewHistogramVec adds a histogram family to the registry; buckets are upper bounds, in increasing order.
func NewHistogramVec(r *Registry, name, help string, buckets []float64, labels ...string) *HistogramVec {
	h := &HistogramVec{desc: desc{name: name, help: help, typ: "histogram", labels: labels}, buckets: slices.Clone(buckets),
		values: map[string]*histogram{}}
	r.add(h)
	return h
}

// Observe records one value in the histogram of the label values.
func (h *HistogramVec) Observe(v float64, values ...string) {
	h.check(values)
	k := key(values)
	h.mu.Lock()
	defer h.mu.Unlock()
	x := h.values[k]
	if x == nil {
		x = &histogram{labels: slices.Clone(values), counts: make([]uint64, len(h.buckets)+1)}
		h.values[k] = x
	}
	i, _ := slices.BinarySearch(h.buckets, v) // the first bucket whose bound is >= v
	x.counts[i]++
	x.sum += v
	x.count++
}

func (h *HistogramVec) write(w *bufio.Writer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.values) == 0 && len(h.labels) > 0 {
		return
	}
	h.header(w)
	values := h.values
	if len(values) == 0 { // a histogram without labels is exported from the start, empty
		values = map[string]*histogram{"": {counts: make([]uint64, len(h.buckets)+1)}}
	}
	for _, k := range slices.Sorted(maps.Keys(values)) {
		x := values[k]
		var cum uint64
		for i, c := range x.counts {
			cum += c
			le := "+Inf"
			if i < len(h.buckets) {
				le = formatFloat(h.buckets[i])
			}
			fmt.Fprintf(w, "%s_bucket%s %d\n", h.name, labelPairs(h.labels, x.labels, "le", le), cum)
		}
		fmt.Fprintf(w, "%s_sum%s %s\n%s_count%s %d\n", h.name, labelPairs(h.labels, x.labels), formatFloat(x.sum),
			h.name, labelPairs(h.labels, x.labels), x.count)
	}
}
