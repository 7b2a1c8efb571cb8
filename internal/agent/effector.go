package agent

import (
	"context"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// The decision loop never does I/O. What it decides goes to effectors, each on its own goroutine: it carries out the
// latest request only (a newer one replaces an older one not yet started), one call at a time, each within a
// deadline, and retries a failed one with backoff until it succeeds or a newer request replaces it. So a slow or hung
// API server, speaker or disk delays only its own effector, and when it answers again one call brings it up to date.

// latest is a one-slot mailbox: put replaces what is there and never blocks.
type latest[T any] chan T

func newLatest[T any]() latest[T] { return make(chan T, 1) }

func (l latest[T]) put(v T) {
	for {
		select {
		case l <- v:
			return
		default:
			select {
			case <-l: // drop the older value
			default:
			}
		}
	}
}

// effector runs do on the latest request.
type effector[T any] struct {
	name     string
	do       func(ctx context.Context, v T) error
	timeout  time.Duration // per call
	minRetry time.Duration
	maxRetry time.Duration
	clock    clock.WithTicker
	in       latest[T]

	mu           sync.Mutex
	failingSince time.Time // zero while the last call succeeded
	lastErr      error
	pending      bool // a request is waiting or being carried out
	calls, ok    int
}

func newEffector[T any](name string, clk clock.WithTicker, timeout, minRetry, maxRetry time.Duration, do func(context.Context, T) error) *effector[T] {
	return &effector[T]{name: name, do: do, timeout: timeout, minRetry: minRetry, maxRetry: maxRetry, clock: clk, in: newLatest[T]()}
}

// put hands the effector a new request; it never blocks.
func (e *effector[T]) put(v T) {
	e.mu.Lock()
	e.pending = true
	e.mu.Unlock()
	e.in.put(v)
}

// run carries out requests until ctx ends.
func (e *effector[T]) run(ctx context.Context) {
	for {
		var v T
		select {
		case <-ctx.Done():
			return
		case v = <-e.in:
		}
		retry := e.minRetry
		for {
			err := e.call(ctx, v)
			if err == nil || ctx.Err() != nil {
				break
			}
			t := e.clock.NewTimer(retry)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case v = <-e.in: // a newer request replaces the failed one, at once
				retry = e.minRetry
			case <-t.C():
				retry = min(2*retry, e.maxRetry)
			}
			t.Stop()
		}
	}
}

func (e *effector[T]) call(ctx context.Context, v T) error {
	cctx, cancel := context.WithTimeout(ctx, e.timeout)
	err := e.do(cctx, v)
	cancel()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls++
	if err == nil {
		e.ok++
		e.failingSince, e.lastErr = time.Time{}, nil
		e.pending = len(e.in) > 0
		return nil
	}
	if e.failingSince.IsZero() {
		e.failingSince = e.clock.Now()
	}
	e.lastErr = err
	return err
}

// health says since when the effector has been failing (zero: it is not) and with what error, and whether work is
// waiting.
func (e *effector[T]) health() (failingSince time.Time, lastErr error, pending bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.failingSince, e.lastErr, e.pending
}

// counts returns how many calls the effector made, and how many succeeded.
func (e *effector[T]) counts() (calls, ok int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls, e.ok
}
