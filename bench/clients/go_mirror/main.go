// go_mirror: the cost of a guarded call on a closed circuit with a no-op
// function, three ways — today's mode (Breaker.Execute: acquire + report, two
// round trips to cbd), mirror mode (cbd.WithMirror: decided locally, the
// outcome queued for a reportBatch), and a minimal in-process breaker written
// here (a mutex and a local counter with cbd's count rule) — and the mirror's
// staleness: the time from a transition to open sent to cbd to the first
// denial the mirroring client returns, over many transitions.
//
//	cd bench/clients/go_mirror && go run . [-cbd BUILD/daemon/cbd | -socket PATH]
//
// Without -socket it starts its own cbd (default $CBD_BUILD_DIR/daemon/cbd,
// else ../../../build/daemon/cbd) on a temporary socket. Each mode runs
// -rounds rounds (alternating, after a warm-up); a round's per-call time is
// its duration over its calls, and the medians of the rounds are compared.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	cbd "cbd.local/client"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "go_mirror:", err)
		os.Exit(1)
	}
}

func noop(context.Context) error { return nil }

// run is the whole benchmark; it returns (rather than exits) on failure, so
// that the cbd it started is always stopped.
func run() error {
	defaultCbd := filepath.Join("..", "..", "..", "build", "daemon", "cbd")
	if dir := os.Getenv("CBD_BUILD_DIR"); dir != "" {
		defaultCbd = filepath.Join(dir, "daemon", "cbd")
	}
	cbdPath := flag.String("cbd", defaultCbd, "the cbd binary to start (unless -socket)")
	socket := flag.String("socket", "", "a running cbd's socket (default: start one)")
	localCalls := flag.Int("n", 1000000, "calls per round, mirror and in-process (1..100000000)")
	remoteCalls := flag.Int("n-remote", 5000, "calls per round, today's mode (1..1000000)")
	rounds := flag.Int("rounds", 11, "rounds per mode (1..100)")
	transitions := flag.Int("transitions", 200, "transitions to open timed for the staleness (100..100000)")
	flag.Parse()
	if *localCalls < 1 || *localCalls > 100000000 || *remoteCalls < 1 || *remoteCalls > 1000000 ||
		*rounds < 1 || *rounds > 100 || *transitions < 100 || *transitions > 100000 {
		return fmt.Errorf("-n is 1..100000000, -n-remote 1..1000000, -rounds 1..100, -transitions 100..100000")
	}

	if *socket == "" {
		dir, err := os.MkdirTemp("", "cbd-go-mirror-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		*socket = filepath.Join(dir, "cbd.sock")
		// A long reset timeout: an open circuit denies until the benchmark
		// closes it again.
		daemon := exec.Command(*cbdPath, "--socket", *socket, "--log-level", "warn", "--reset-timeout-ms", "600000")
		daemon.Stderr = os.Stderr
		if err := daemon.Start(); err != nil {
			return err
		}
		defer func() {
			_ = daemon.Process.Signal(os.Interrupt)
			_ = daemon.Wait()
		}()
		if err := waitForSocket(*socket); err != nil {
			return err
		}
	}

	ctx := context.Background()
	plain, err := cbd.Dial(ctx, *socket)
	if err != nil {
		return err
	}
	defer plain.Close()
	mirroring, err := cbd.Dial(ctx, *socket, cbd.WithMirror(cbd.MirrorOptions{}))
	if err != nil {
		return err
	}
	defer mirroring.Close()
	for _, key := range []string{"bench/today", "bench/mirror", "bench/stale"} {
		if _, err := plain.Reset(ctx, key); err != nil {
			return err
		}
	}

	today := plain.Breaker("bench/today")
	mirrored := mirroring.Breaker("bench/mirror")
	local := newLocalBreaker(5, 30*time.Second)
	loop := func(execute func(context.Context, func(context.Context) error) error) func(int) (time.Duration, error) {
		return func(n int) (time.Duration, error) {
			start := time.Now()
			for i := 0; i < n; i++ {
				if err := execute(ctx, noop); err != nil {
					return 0, err
				}
			}
			return time.Since(start), nil
		}
	}
	modes := []struct {
		name  string
		calls int
		run   func(int) (time.Duration, error)
		per   []float64 // ns per call, one per round
	}{
		{name: "today (acquire + report)", calls: *remoteCalls, run: loop(today.Execute)},
		{name: "mirror", calls: *localCalls, run: loop(mirrored.Execute)},
		{name: "in-process breaker", calls: *localCalls, run: loop(local.Execute)},
	}

	// Warm-up; the mirror's until it decides locally.
	if err := waitLocal(mirroring, mirrored); err != nil {
		return err
	}
	for _, m := range modes {
		if _, err := m.run(m.calls / 10); err != nil {
			return err
		}
	}
	before := mirroring.MirrorStats()
	for r := 0; r < *rounds; r++ {
		for i := range modes {
			d, err := modes[i].run(modes[i].calls)
			if err != nil {
				return fmt.Errorf("%s: %w", modes[i].name, err)
			}
			modes[i].per = append(modes[i].per, float64(d.Nanoseconds())/float64(modes[i].calls))
		}
	}
	if err := mirroring.Flush(ctx); err != nil {
		return err
	}
	after := mirroring.MirrorStats()

	medians := make([]float64, len(modes))
	fmt.Printf("go: a guarded call on a closed circuit, no-op function; median of %d rounds (GOMAXPROCS %d)\n", *rounds, runtime.GOMAXPROCS(0))
	for i, m := range modes {
		medians[i] = median(m.per)
		fmt.Printf("  %-26s %10.1f ns/call  (%d calls a round)\n", m.name+":", medians[i], m.calls)
	}
	fmt.Printf("  mirror / in-process: %.2f  (target ≤ 3)\n", medians[1]/medians[2])
	fmt.Printf("  today / mirror:      %.1f  (target ≥ 10)\n", medians[0]/medians[1])
	fmt.Printf("  mirror during the rounds: %d allowed locally, %d asked cbd; %d outcomes sent in %d batches, %d dropped from the full queue\n",
		after.LocalAllowed-before.LocalAllowed, after.Remote-before.Remote,
		(after.Applied+after.Stale+after.Errors)-(before.Applied+before.Stale+before.Errors),
		after.Batches-before.Batches, after.Dropped-before.Dropped)

	// Sustained: how fast the flusher and cbd take outcomes — a full queue
	// (QueueLimit, 10,000) of locally allowed calls, then Flush, timed.
	var flushed int64
	var flushTime time.Duration
	for r := 0; r < *rounds; r++ {
		start := time.Now()
		if _, err := modes[1].run(10000); err != nil {
			return err
		}
		if err := mirroring.Flush(ctx); err != nil {
			return err
		}
		flushTime += time.Since(start)
		flushed += 10000
	}
	fmt.Printf("  sustained: 10,000 mirrored calls then Flush, %d times: %.0f outcomes/s recorded by cbd (lines of %d outcomes at the end)\n",
		*rounds, float64(flushed)/flushTime.Seconds(), mirroring.MirrorStats().LineEntries)

	fmt.Printf("staleness (transition to open sent → first denial returned by the mirroring client), %d transitions each:\n", *transitions)
	for _, caller := range []struct {
		what  string
		pause time.Duration
	}{
		{"a caller without pause (its outcomes saturate cbd)", 0},
		{"a caller pausing 100 µs between calls", 100 * time.Microsecond},
	} {
		lags, err := staleness(ctx, plain, mirroring, *transitions, caller.pause)
		if err != nil {
			return err
		}
		fmt.Printf("  %-52s p50 %8v  p99 %8v  max %8v\n", caller.what+":",
			percentile(lags, 50).Round(time.Microsecond), percentile(lags, 99).Round(time.Microsecond), lags[len(lags)-1].Round(time.Microsecond))
	}
	return nil
}

// waitLocal calls b until the mirror allows a call locally (the watch
// confirmed and the entry seeded), within 10 s.
func waitLocal(c *cbd.Client, b *cbd.Breaker) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		before := c.MirrorStats().LocalAllowed
		if err := b.Execute(context.Background(), noop); err != nil {
			return err
		}
		if c.MirrorStats().LocalAllowed > before {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the mirror decided nothing locally within 10 s")
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// staleness: a caller goroutine calls the mirrored breaker, pausing between
// calls; the controller opens the circuit (another client, as another
// process would) and times until the caller's first denial, then closes it
// and waits until the caller is allowed locally again. Sorted lags.
func staleness(ctx context.Context, controller, mirroring *cbd.Client, transitions int, pause time.Duration) ([]time.Duration, error) {
	const key = "bench/stale"
	b := mirroring.Breaker(key)
	if err := waitLocal(mirroring, b); err != nil {
		return nil, err
	}
	var (
		openedAt atomic.Int64 // ns since base when the open was sent; 0 while closed
		deniedAt = make(chan time.Duration, 1)
		stop     atomic.Bool
		callErr  error
		wg       sync.WaitGroup
	)
	base := time.Now()
	wg.Add(1)
	go func() {
		defer wg.Done()
		reported := false
		for !stop.Load() {
			err := b.Execute(ctx, noop)
			switch {
			case err == nil:
				reported = false
			case errors.Is(err, cbd.ErrOpen):
				if !reported && openedAt.Load() != 0 {
					reported = true
					deniedAt <- time.Since(base)
				}
			default:
				callErr = err
				return
			}
			if pause > 0 {
				time.Sleep(pause)
			}
		}
	}()
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()
	var lags []time.Duration
	for i := 0; i < transitions; i++ {
		openedAt.Store(int64(time.Since(base)))
		if _, err := controller.Transition(ctx, key, cbd.Open); err != nil {
			return nil, err
		}
		select {
		case at := <-deniedAt:
			lags = append(lags, at-time.Duration(openedAt.Load()))
		case <-time.After(10 * time.Second):
			return nil, fmt.Errorf("transition %d: no denial within 10 s (%v)", i, callErr)
		}
		openedAt.Store(0)
		if _, err := controller.Transition(ctx, key, cbd.Closed); err != nil {
			return nil, err
		}
		// Allowed locally again once the closed event is in.
		deadline := time.Now().Add(10 * time.Second)
		for before := mirroring.MirrorStats().LocalAllowed; mirroring.MirrorStats().LocalAllowed < before+10; {
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("transition %d: not allowed locally within 10 s of closing (%v)", i, callErr)
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
	return lags, nil
}

// localBreaker is the minimal in-process breaker: cbd's count rule (a
// failure bringing failureCount to the threshold opens; after the reset
// timeout one probe decides), the same panic rule as Execute, no I/O. A
// closed circuit costs an atomic load and an atomic add, the least a counter
// shared by goroutines can cost; the mutex is for the open side only.
type localBreaker struct {
	closed       atomic.Bool
	failures     atomic.Int64
	successes    atomic.Int64
	threshold    int64
	resetTimeout time.Duration

	mu       sync.Mutex // the open side
	openedAt time.Time
	probing  bool
}

func newLocalBreaker(threshold int64, resetTimeout time.Duration) *localBreaker {
	l := &localBreaker{threshold: threshold, resetTimeout: resetTimeout}
	l.closed.Store(true)
	return l
}

var errLocalOpen = errors.New("local breaker open")

func (l *localBreaker) Execute(ctx context.Context, fn func(context.Context) error) (err error) {
	probe := false
	if !l.closed.Load() {
		l.mu.Lock()
		if l.probing || time.Since(l.openedAt) < l.resetTimeout {
			l.mu.Unlock()
			return errLocalOpen
		}
		l.probing, probe = true, true
		l.mu.Unlock()
	}
	completed := false
	defer func() {
		failed := !completed || err != nil
		if probe {
			l.mu.Lock()
			l.probing = false
			if failed {
				l.openedAt = time.Now()
			} else {
				l.failures.Store(0)
				l.successes.Store(0)
				l.closed.Store(true)
			}
			l.mu.Unlock()
			return
		}
		if !failed {
			l.successes.Add(1)
			return
		}
		if l.failures.Add(1) == l.threshold {
			l.mu.Lock()
			l.openedAt = time.Now()
			l.closed.Store(false)
			l.mu.Unlock()
		}
	}()
	err = fn(ctx)
	completed = true
	return err
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentile of sorted lags (nearest rank).
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

func waitForSocket(path string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.Dial("unix", path)
		if err == nil {
			return conn.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cbd did not listen on %s within 10 s: %w", path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
