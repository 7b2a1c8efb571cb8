package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// Events of the agent (events.k8s.io/v1, on its NodeAnnouncement) are aggregated so that a flapping check cannot
// flood the API server: the same event (type, reason and note) again within eventSeriesWindow becomes a series
// whose count is written at most every eventFlushInterval; new events are created at most eventBurst at once and
// one per eventRefill after that; the rest are dropped and counted. Recording never blocks the caller.
const (
	eventSeriesWindow  = 10 * time.Minute
	eventFlushInterval = 30 * time.Second
	eventBurst         = 25
	eventRefill        = 10 * time.Second
	eventQueue         = 256
	maxEventKeys       = 64
	maxNoteLength      = 1024
	reportingComponent = "anycast.dev/agent"
)

type eventKey struct{ eventType, reason, note string }

type eventSeries struct {
	name      string // of the Event object
	count     int32
	last      time.Time
	written   int32 // count last written
	createdOK bool
}

// The agent's events live in namespace default: the API server requires that of the events of a cluster-scoped
// object such as a NodeAnnouncement.
type eventRecorder struct {
	kube      *kube
	clock     clock.WithTicker
	instance  string
	namespace string

	mu        sync.Mutex
	regarding corev1.ObjectReference
	queue     []eventsv1.Event
	wake      latest[struct{}]
	series    map[eventKey]*eventSeries
	tokens    float64
	refilled  time.Time
	dropped   int
	writes    int
}

func newEventRecorder(k *kube, clk clock.WithTicker, node, namespace string) *eventRecorder {
	return &eventRecorder{kube: k, clock: clk, instance: "anycast-agent-" + node, namespace: namespace, wake: newLatest[struct{}](),
		series: map[eventKey]*eventSeries{}, tokens: eventBurst, refilled: clk.Now()}
}

// about sets the object the events are about (the node's NodeAnnouncement).
func (r *eventRecorder) about(na *anycastv1.NodeAnnouncement) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.regarding = corev1.ObjectReference{APIVersion: anycastv1.GroupVersion.String(), Kind: "NodeAnnouncement", Name: na.Name, UID: na.UID}
}

// record queues an event; it never blocks.
func (r *eventRecorder) record(eventType, reason, action, note string) {
	if len(note) > maxNoteLength {
		note = note[:maxNoteLength-3] + "..."
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.regarding.Name == "" {
		return
	}
	if len(r.queue) >= eventQueue {
		r.dropped++
		return
	}
	now := metav1.NewMicroTime(r.clock.Now())
	r.queue = append(r.queue, eventsv1.Event{Type: eventType, Reason: reason, Action: action, Note: note, EventTime: now,
		Regarding: r.regarding, ReportingController: reportingComponent, ReportingInstance: r.instance})
	r.wake.put(struct{}{})
}

// run writes the queued events and the series counts until ctx ends.
func (r *eventRecorder) run(ctx context.Context) {
	flush := r.clock.NewTicker(eventFlushInterval)
	defer flush.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-flush.C():
			r.flushSeries(ctx)
		}
		r.mu.Lock()
		queue := r.queue
		r.queue = nil
		r.mu.Unlock()
		for _, e := range queue {
			r.write(ctx, e)
		}
	}
}

func (r *eventRecorder) write(ctx context.Context, e eventsv1.Event) {
	key := eventKey{e.Type, e.Reason, e.Note}
	now := e.EventTime.Time
	r.mu.Lock()
	if s := r.series[key]; s != nil && now.Sub(s.last) < eventSeriesWindow {
		s.count++
		s.last = now
		r.mu.Unlock()
		return // written by flushSeries
	}
	// A new event: within the rate of creations, and the oldest series forgotten beyond maxEventKeys.
	r.tokens = min(eventBurst, r.tokens+now.Sub(r.refilled).Seconds()/eventRefill.Seconds())
	r.refilled = now
	if r.tokens < 1 {
		r.dropped++
		r.mu.Unlock()
		return
	}
	r.tokens--
	if len(r.series) >= maxEventKeys {
		var oldest eventKey
		var at time.Time
		for k, s := range r.series {
			if at.IsZero() || s.last.Before(at) {
				oldest, at = k, s.last
			}
		}
		delete(r.series, oldest)
	}
	e.Name = fmt.Sprintf("%s.%x", e.Regarding.Name, now.UnixNano())
	e.Namespace = r.namespace
	s := &eventSeries{name: e.Name, count: 1, written: 1, last: now}
	r.series[key] = s
	r.writes++
	r.mu.Unlock()
	err := r.kube.createEvent(ctx, &e)
	r.mu.Lock()
	s.createdOK = err == nil
	r.mu.Unlock()
}

// flushSeries writes the count of every series that grew since its last write.
func (r *eventRecorder) flushSeries(ctx context.Context) {
	type update struct {
		name  string
		patch []byte
		s     *eventSeries
		count int32
	}
	var updates []update
	r.mu.Lock()
	now := r.clock.Now()
	for k, s := range r.series {
		if s.createdOK && s.count > s.written {
			patch, _ := json.Marshal(map[string]any{"series": eventsv1.EventSeries{Count: s.count, LastObservedTime: metav1.NewMicroTime(s.last)}})
			updates = append(updates, update{s.name, patch, s, s.count})
			r.writes++
		}
		if now.Sub(s.last) >= eventSeriesWindow {
			delete(r.series, k)
		}
	}
	r.mu.Unlock()
	for _, u := range updates {
		if err := r.kube.patchEvent(ctx, r.namespace, u.name, u.patch); err == nil {
			r.mu.Lock()
			u.s.written = u.count
			r.mu.Unlock()
		}
	}
}

// stats returns how many event writes were attempted and how many events were dropped.
func (r *eventRecorder) stats() (writes, dropped int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writes, r.dropped
}
