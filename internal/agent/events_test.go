package agent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// TestEventsOfAFlappingCheckAreBounded: 1,000 flips of a check (each a Withdrawn and an Announced event with the
// same cause) make a bounded number of API writes: one event per distinct note, and its series count written at
// most every eventFlushInterval; a flood of distinct notes is rate-limited.
func TestEventsOfAFlappingCheckAreBounded(t *testing.T) {
	var creates, patches atomic.Int64
	var mu sync.Mutex
	var lastSeries string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.Method {
		case http.MethodPost:
			creates.Add(1)
		case http.MethodPatch:
			patches.Add(1)
			mu.Lock()
			lastSeries = string(body)
			mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"kind":"Event","apiVersion":"events.k8s.io/v1","metadata":{"name":"x"}}`)
	}))
	t.Cleanup(api.Close)
	k, err := newKube(&rest.Config{Host: api.URL})
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(time.Unix(1e9, 0))
	r := newEventRecorder(k, clk, "fra-1", "default")
	r.about(&anycastv1.NodeAnnouncement{})
	r.regarding.Name = "fra-1"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { r.run(ctx); close(done) }()
	drain := func() {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			r.mu.Lock()
			empty := len(r.queue) == 0
			r.mu.Unlock()
			if empty {
				return
			}
		}
		t.Fatal("the recorder did not drain its queue")
	}
	for i := range 1000 {
		r.record("Warning", "Withdrawn", "Announce", "Withdrew 198.51.100.0/24 from fra-1: check web failed 3 times (HTTP 503, want 2xx)")
		r.record("Normal", "Announced", "Announce", "Announced 198.51.100.0/24 again from fra-1 after 1m0s healthy")
		if i%100 == 0 {
			drain()
			clk.Step(time.Second)
		}
	}
	drain()
	clk.Step(eventFlushInterval) // the series counts are written at the next flush
	for deadline := time.Now().Add(10 * time.Second); patches.Load() < 2 && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
	}
	if c := creates.Load(); c != 2 {
		t.Errorf("1,000 flips created %d events, want 2 (one per distinct note)", c)
	}
	if p := patches.Load(); p < 2 || p > 2*11 {
		t.Errorf("1,000 flips patched %d times, want one series update per event and flush (at most %d)", p, 2*11)
	}
	mu.Lock()
	if !strings.Contains(lastSeries, `"count":1000`) {
		t.Errorf("the last series update %s does not count 1,000", lastSeries)
	}
	mu.Unlock()

	// Distinct notes (an error text that changes each time) are rate-limited: a burst, then one per eventRefill.
	before := creates.Load()
	_, dropped0 := r.stats()
	for i := range 1000 {
		r.record("Warning", "Withdrawn", "Announce", fmt.Sprintf("Withdrew 198.51.100.0/24 from fra-1: check web failed 3 times (attempt %d)", i))
	}
	// Every distinct note is either created or dropped; wait until the recorder has handled all of them (the queue
	// empties before its last batch is written).
	handled := func() int64 { _, d := r.stats(); return creates.Load() - before + int64(d-dropped0) }
	for deadline := time.Now().Add(10 * time.Second); handled() < 1000 && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
	}
	if n := creates.Load() - before; n > eventBurst {
		t.Errorf("1,000 distinct notes created %d events, more than the burst of %d", n, eventBurst)
	}
	if w, dropped := r.stats(); dropped-dropped0 < 1000-eventBurst {
		t.Errorf("%d writes, %d dropped: the flood was not limited", w, dropped-dropped0)
	}
	cancel()
	<-done
}
