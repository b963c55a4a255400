package cbd

// Breaker: acquire, call, report — gobreaker's Execute with the state kept in
// cbd, so that every process on the host shares the circuit and its probes.

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Breaker runs calls under one key's circuit. Safe for concurrent use.
type Breaker struct {
	client     *Client
	key        string
	failClosed bool
	isFailure  func(error) bool
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
func (b *Breaker) Execute(ctx context.Context, fn func(context.Context) error) (err error) {
	acquired, acquireErr := b.client.Acquire(ctx, b.key)
	switch {
	case acquireErr == nil:
	case errors.Is(acquireErr, ErrUnavailable) && ctx.Err() == nil:
		if b.failClosed {
			return fmt.Errorf("cbd: circuit %q: %w", b.key, acquireErr)
		}
		return fn(ctx)
	default:
		return acquireErr
	}
	if !acquired.Allowed {
		return &OpenError{Key: b.key, RetryAfter: time.Duration(acquired.RetryAfterMs) * time.Millisecond, Circuit: acquired.Circuit}
	}

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
