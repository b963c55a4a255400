package cbd

// The reference store's own cases (SEMANTICS.md), through Get, Success,
// Failure, Transition and Reset.

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestReferenceStore(t *testing.T) {
	d := startCbd(t)
	c := dial(t, d)
	ctx := context.Background()

	t.Run("an unknown key reads closed with zero counts", func(t *testing.T) {
		before := time.Now().UnixMilli()
		s := must(c.Get(ctx, "unknown"))
		if s.State != Closed || s.FailureCount != 0 || s.SuccessCount != 0 || s.LastFailureTime != 0 {
			t.Fatalf("got %+v", s.Snapshot)
		}
		if s.LastStateChange < before-1000 || s.LastStateChange > time.Now().UnixMilli()+1000 {
			t.Fatalf("lastStateChange %d is not now", s.LastStateChange)
		}
		if s.Generation <= 0 || s.Forced != nil || s.Transition != nil {
			t.Fatalf("got %+v", s)
		}
	})

	t.Run("two failures count 2 and stamp the last failure", func(t *testing.T) {
		must(c.Failure(ctx, "two"))
		s := must(c.Failure(ctx, "two"))
		if s.FailureCount != 2 || s.LastFailureTime == 0 || s.State != Closed {
			t.Fatalf("got %+v", s.Snapshot)
		}
	})

	t.Run("one success counts 1", func(t *testing.T) {
		s := must(c.Success(ctx, "one"))
		if s.SuccessCount != 1 || s.FailureCount != 0 {
			t.Fatalf("got %+v", s.Snapshot)
		}
	})

	t.Run("a transition to closed zeroes both counts", func(t *testing.T) {
		must(c.Failure(ctx, "z"))
		must(c.Success(ctx, "z"))
		must(c.Transition(ctx, "z", Open))
		s := must(c.Transition(ctx, "z", Closed))
		if s.State != Closed || s.FailureCount != 0 || s.SuccessCount != 0 {
			t.Fatalf("got %+v", s.Snapshot)
		}
		if s.Transition == nil || s.Transition.From != Open || s.Transition.To != Closed || s.Transition.Cause != "manual" {
			t.Fatalf("transition %+v", s.Transition)
		}
	})

	t.Run("a transition to half-open zeroes successCount only", func(t *testing.T) {
		must(c.Failure(ctx, "h"))
		must(c.Success(ctx, "h"))
		s := must(c.Transition(ctx, "h", HalfOpen))
		if s.State != HalfOpen || s.FailureCount != 1 || s.SuccessCount != 0 {
			t.Fatalf("got %+v", s.Snapshot)
		}
	})

	t.Run("a transition to open keeps the counts and stamps lastStateChange", func(t *testing.T) {
		must(c.Failure(ctx, "o"))
		before := must(c.Get(ctx, "o"))
		time.Sleep(5 * time.Millisecond)
		s := must(c.Transition(ctx, "o", Open))
		if s.FailureCount != 1 || s.LastStateChange <= before.LastStateChange || s.Generation == before.Generation {
			t.Fatalf("before %+v, after %+v", before, s)
		}
		again := must(c.Transition(ctx, "o", Open))
		if again.LastStateChange < s.LastStateChange {
			t.Fatalf("a transition to the same state must still stamp lastStateChange: %+v", again)
		}
	})

	t.Run("reset starts fresh", func(t *testing.T) {
		must(c.Failure(ctx, "r"))
		must(c.Success(ctx, "r"))
		if removed := must(c.Reset(ctx, "r")); !removed {
			t.Fatal("reset of an existing circuit said removed=false")
		}
		s := must(c.Get(ctx, "r"))
		if s.FailureCount != 0 || s.SuccessCount != 0 {
			t.Fatalf("got %+v", s.Snapshot)
		}
		must(c.Reset(ctx, "r"))
		if removed := must(c.Reset(ctx, "r")); removed {
			t.Fatal("reset of a missing circuit said removed=true")
		}
	})

	t.Run("circuits are independent", func(t *testing.T) {
		must(c.Transition(ctx, "iso-a", Open))
		if s := must(c.Get(ctx, "iso-b")); s.State != Closed {
			t.Fatalf("got %+v", s.Snapshot)
		}
	})

	t.Run("bad input gets a typed error before anything is sent", func(t *testing.T) {
		for _, key := range []string{"", "a\nb", string(make([]byte, 1025))} {
			_, err := c.Get(ctx, key)
			var e *Error
			if !errors.As(err, &e) || e.Code != "invalid_key" {
				t.Fatalf("key %q: got %v", key, err)
			}
		}
		_, err := c.Transition(ctx, "k", State("sideways"))
		var e *Error
		if !errors.As(err, &e) || e.Code != "invalid_state" {
			t.Fatalf("got %v", err)
		}
		// The connection is still fine afterwards.
		must(c.Ping(ctx))
	})
}
