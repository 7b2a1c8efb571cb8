package agent

import (
	"fmt"
	"net/http"
	"time"
)

// Handler serves the agent's probes. /healthz fails only when the decision loop itself is stuck: a liveness restart
// drops every BGP session, so a slow API server or a failing speaker must never cause one. /readyz also reports the
// speaker (it holds what was asked) and the API (the NodeAnnouncement was read, status is written).
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := a.Live(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := a.Ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// MetricsHandler serves the agent's Prometheus metrics (anycast_agent_*, and Go's and the process's).
func (a *Agent) MetricsHandler() http.Handler { return a.metrics.handler() }

// Live reports whether the decision loop turned within LivenessTimeout.
func (a *Agent) Live() error {
	if idle := a.clock.Since(time.Unix(0, a.alive.Load())); idle > a.cfg.LivenessTimeout {
		return fmt.Errorf("the decision loop has not run for %s", idle.Round(time.Second))
	}
	return nil
}

// Ready reports whether the agent is in sync: the loop runs, the speaker holds what was asked, the NodeAnnouncement
// came from the API server, and status is being written.
func (a *Agent) Ready() error {
	if err := a.Live(); err != nil {
		return err
	}
	if since, err, _ := a.applier.health(); !since.IsZero() {
		return fmt.Errorf("speaker: failing since %s: %v", since.UTC().Format(time.RFC3339), err)
	}
	if a.kube == nil {
		return nil
	}
	if !a.specSynced.Load() {
		return fmt.Errorf("API: the NodeAnnouncement has not been read from the API server yet")
	}
	if since, err, _ := a.status.health(); !since.IsZero() && a.clock.Since(since) > a.cfg.StatusStaleAfter {
		return fmt.Errorf("API: status not written since %s: %v", since.UTC().Format(time.RFC3339), err)
	}
	return nil
}

// Stats counts what the agent wrote to the API server.
type Stats struct {
	// StatusCalls counts status writes attempted, StatusWritten those that succeeded.
	StatusCalls, StatusWritten int
	// EventWrites counts event creations and series updates attempted; EventsDropped the events not written
	// (rate limit, full queue).
	EventWrites, EventsDropped int
}

// Stats returns the agent's write counts.
func (a *Agent) Stats() Stats {
	calls, ok := a.status.counts()
	ew, ed := a.events.stats()
	return Stats{StatusCalls: calls, StatusWritten: ok, EventWrites: ew, EventsDropped: ed}
}
