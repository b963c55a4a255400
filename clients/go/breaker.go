package cbd

// Breaker: acquire, call, report — gobreaker's Execute with the state kept in
// cbd, so that every process on the host shares the circuit and its probes.

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Breaker runs calls under one key's circuit. Safe for concurrent use.
type Breaker struct {
	client     *Client
	key        string
	failClosed bool
	isFailure  func(error) bool
	// entry is the key's mirror entry, looked up once (mirror mode).
	entry atomic.Pointer[mirrorEntry]
}

// BreakerOption configures a Breaker.
type BreakerOption func(*Breaker)

// FailClosed makes Execute return the ErrUnavailable error, without running
// the call, when cbd cannot decide; by default the call runs (fail open, as
// the reference gateway does).
func FailClosed() BreakerOption { return func(b *Breaker) { b.failClosed = true } }

// CountAsFailure decides which errors of the call count as failures of the
// circuit (by default every non-nil error does); the others count as
// successes and are still returned.
func CountAsFailure(isFailure func(error) bool) BreakerOption {
	return func(b *Breaker) { b.isFailure = isFailure }
}

// Breaker returns a breaker for key.
func (c *Client) Breaker(key string, opts ...BreakerOption) *Breaker {
	b := &Breaker{client: c, key: key, isFailure: func(err error) bool { return err != nil }}
	for _, o := range opts {
		o(b)
	}
	return b
}

// Execute asks cbd whether the call may go ahead, runs fn, and reports the
// outcome with the permit and generation it was given.
//
// It returns *OpenError (errors.Is(err, ErrOpen)) without running fn when
// the circuit denies the call. When cbd is unavailable it runs fn and
// returns fn's error (fail open), unless FailClosed. A failed report does not
// change what Execute returns: the call has run, and its result is the
// caller's. A panic in fn is reported as a failure and goes on.
//
// With WithMirror, a call on a circuit the mirror knows to be closed (or
// pinned closed) is allowed without asking cbd and its outcome is queued for
// the next batch; a call the mirror knows cbd denies until a time is denied
// locally until then; anything else asks cbd as above (see mirror.go).
func (b *Breaker) Execute(ctx context.Context, fn func(context.Context) error) (err error) {
	if m := b.client.mirror; m != nil {
		return b.executeMirrored(ctx, m, fn)
	}
	return b.executeRemote(ctx, fn)
}

// executeRemote is Execute without the mirror: acquire, call, report.
func (b *Breaker) executeRemote(ctx context.Context, fn func(context.Context) error) error {
	acquired, done, err := b.acquire(ctx, fn)
	if done {
		return err
	}
	if !acquired.Allowed {
		return b.openError(acquired)
	}
	return b.runReported(ctx, acquired, fn)
}

// acquire asks cbd whether the call may go ahead. done is true when err is
// already the call's result: acquiring failed, or cbd was unavailable and
// the breaker failed closed, or failed open and ran fn.
func (b *Breaker) acquire(ctx context.Context, fn func(context.Context) error) (acquired AcquireResult, done bool, err error) {
	acquired, err = b.client.Acquire(ctx, b.key)
	switch {
	case err == nil:
		return acquired, false, nil
	case errors.Is(err, ErrUnavailable) && ctx.Err() == nil:
		if b.failClosed {
			return acquired, true, fmt.Errorf("cbd: circuit %q: %w", b.key, err)
		}
		return acquired, true, fn(ctx)
	default:
		return acquired, true, err
	}
}

// openError is the denial cbd answered, as the caller sees it.
func (b *Breaker) openError(acquired AcquireResult) error {
	return &OpenError{Key: b.key, RetryAfter: time.Duration(acquired.RetryAfterMs) * time.Millisecond, Circuit: acquired.Circuit}
}

// executeMirrored is Execute in mirror mode. Its first part is the hot path:
// a closed circuit the mirror knows allows at its generation (rule 2), with
// loads only, and the outcome is queued.
func (b *Breaker) executeMirrored(ctx context.Context, m *mirror, fn func(context.Context) error) (err error) {
	if e := b.entry.Load(); e != nil {
		if g := e.allowGen.Load(); g >= 0 {
			if err = ctx.Err(); err != nil {
				return err
			}
			if !e.used.Load() {
				e.used.Store(true)
			}
			completed := false
			defer func() {
				m.enqueue(e, g, !completed || b.isFailure(err), true)
			}()
			err = fn(ctx)
			completed = true
			return err
		}
	}
	return b.executeMirroredSlow(ctx, m, fn)
}

// executeMirroredSlow is the rest of Execute in mirror mode: rules 1, 3, 4.
func (b *Breaker) executeMirroredSlow(ctx context.Context, m *mirror, fn func(context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	e := b.entry.Load()
	if e == nil {
		if e = m.entry(b.key); e == nil {
			return b.executeRemote(ctx, fn) // not mirrored: invalid key, bounds, closed
		}
		b.entry.Store(e)
	}
	if !e.used.Load() {
		e.used.Store(true)
	}
	d, g, open, covered, drops := e.decide(m.now())
	switch d {
	case allowLocally:
		return b.runQueued(ctx, m, e, g, true, fn)
	case denyLocally:
		m.localDenied.Add(1)
		return open
	case lookAgain: // idle-dropped, or the client closed
		b.entry.CompareAndSwap(e, nil)
		return b.executeMirrored(ctx, m, fn)
	}

	// Rules 1 and 4: ask cbd.
	m.remote.Add(1)
	acquired, done, err := b.acquire(ctx, fn)
	if done {
		return err
	}
	m.learn(e, acquired, covered, drops)
	if !acquired.Allowed {
		return b.openError(acquired)
	}
	if acquired.Permit != "" {
		// A probe settles at once: reported directly, with its permit.
		m.probes.Add(1)
		return b.runReported(ctx, acquired, fn)
	}
	if !covered {
		// Not yet known to be a protocol 9 cbd: report as without the mirror.
		return b.runReported(ctx, acquired, fn)
	}
	return b.runQueued(ctx, m, e, acquired.Circuit.Generation, false, fn)
}

// runQueued runs fn and queues its outcome for the next batch.
func (b *Breaker) runQueued(ctx context.Context, m *mirror, e *mirrorEntry, generation int64, local bool, fn func(context.Context) error) (err error) {
	completed := false
	defer func() {
		m.enqueue(e, generation, !completed || b.isFailure(err), local)
	}()
	err = fn(ctx)
	completed = true
	return err
}

// runReported runs fn and reports its outcome directly, with acquired's
// generation and permit.
func (b *Breaker) runReported(ctx context.Context, acquired AcquireResult, fn func(context.Context) error) (err error) {
	completed := false
	defer func() {
		outcome := Success
		if !completed || b.isFailure(err) {
			outcome = Failure
		}
		// The report goes out even when ctx is done (a probe's permit must be
		// released), within the client's own timeout.
		_, _ = b.client.Report(context.Background(), b.key, outcome, WithAcquired(acquired))
	}()
	err = fn(ctx)
	completed = true
	return err
}

// Key is the breaker's circuit.
func (b *Breaker) Key() string { return b.key }
