package health

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// maxErrorLength bounds an error kept in a result (and written to status).
const maxErrorLength = 512

// Result is the outcome of one probe.
type Result struct {
	Passed  bool
	At      time.Time // when the probe started
	Latency time.Duration
	Err     string
}

// Named is a probe with the name of its check and its timeout.
type Named struct {
	Name    string
	Probe   Probe
	Timeout time.Duration
}

// Runner runs probes with a bound on how many run at once, so that a node with many checks never opens more
// connections to its own services than that.
type Runner struct {
	clock clock.PassiveClock
	slots chan struct{}
}

// NewRunner returns a runner that runs at most concurrency probes at once.
func NewRunner(c clock.PassiveClock, concurrency int) *Runner {
	return &Runner{clock: c, slots: make(chan struct{}, max(concurrency, 1))}
}

// Run runs one probe with its timeout.
func (r *Runner) Run(ctx context.Context, p Named) Result {
	select {
	case r.slots <- struct{}{}:
	case <-ctx.Done():
		return Result{At: r.clock.Now(), Err: ctx.Err().Error()}
	}
	defer func() { <-r.slots }()
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	start := r.clock.Now()
	err := p.Probe.Probe(ctx)
	res := Result{Passed: err == nil, At: start, Latency: r.clock.Since(start)}
	if err != nil {
		if timedOut(ctx, err) {
			res.Err = "timed out after " + p.Timeout.String() + ": " + err.Error()
		} else {
			res.Err = err.Error()
		}
		if len(res.Err) > maxErrorLength {
			res.Err = res.Err[:maxErrorLength]
		}
	}
	return res
}

// timedOut reports whether a probe failed because its time ran out: the context's deadline passed, or a socket
// deadline set from it fired first (the two race by a hair).
func timedOut(ctx context.Context, err error) bool {
	var netErr net.Error
	return errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &netErr) && netErr.Timeout())
}

// RunAll runs probes concurrently (within the runner's bound) and returns their results in order.
func (r *Runner) RunAll(ctx context.Context, probes []Named) []Result {
	results := make([]Result, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Go(func() { results[i] = r.Run(ctx, p) })
	}
	wg.Wait()
	return results
}
