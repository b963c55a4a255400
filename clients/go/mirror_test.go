package cbd

// Mirror mode (issue #20) against a real cbd (protocol 9): the rules in one
// process, then the three multi-process cases of the shared design —
// staleness, exactness, the probe race — on the memory backend and on Redis.
// Timings are printed, never asserted (the machine is shared).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var errBoom = errors.New("boom")

func noop(context.Context) error { return nil }

// mirrorState is the mirror's view of key: its state, and whether it has one.
func mirrorState(c *Client, key string) (Circuit, bool) {
	m := c.mirror
	m.mu.Lock()
	e := m.keys[key]
	m.mu.Unlock()
	if e == nil {
		return Circuit{}, false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.circuit, e.seeded && e.covered
}

// eventually polls cond every millisecond for up to 10 s (a liveness bound,
// not a timing assertion).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// warm makes calls on b until the mirror allows one locally.
func warm(t *testing.T, c *Client, b *Breaker) {
	t.Helper()
	eventually(t, "a call allowed locally", func() bool {
		before := c.MirrorStats().LocalAllowed
		if err := b.Execute(context.Background(), noop); err != nil {
			t.Fatal(err)
		}
		return c.MirrorStats().LocalAllowed > before
	})
}

func TestMirrorRules(t *testing.T) {
	d := startCbd(t, "--failure-threshold", "3", "--reset-timeout-ms", "60000")
	plain := dial(t, d)
	c := dial(t, d, WithMirror(MirrorOptions{}))
	ctx := context.Background()
	b := c.Breaker("rules")

	// Rule 1: the first call asks cbd; once the watch is confirmed an acquire
	// seeds the entry, and from then on calls are allowed locally.
	if err := b.Execute(ctx, noop); err != nil {
		t.Fatal(err)
	}
	if st := c.MirrorStats(); st.Remote != 1 || st.LocalAllowed != 0 || st.Keys != 1 {
		t.Fatalf("after the first call %+v", st)
	}
	warm(t, c, b)
	before := c.MirrorStats()
	for i := 0; i < 100; i++ {
		if err := b.Execute(ctx, noop); err != nil {
			t.Fatal(err)
		}
	}
	after := c.MirrorStats()
	if after.Remote != before.Remote || after.LocalAllowed != before.LocalAllowed+100 {
		t.Fatalf("100 calls on a closed circuit: before %+v after %+v", before, after)
	}
	must(0, c.Flush(ctx))
	calls := after.LocalAllowed + after.Remote
	if s := must(plain.Get(ctx, "rules")); s.SuccessCount != calls {
		t.Fatalf("successCount %d after %d calls and a flush", s.SuccessCount, calls)
	}

	// Rule 5 then 4 then 3: cbd opens the circuit (another client); once the
	// event is in, the next call asks cbd, is denied, and the ones after it
	// are denied locally with what is left of retryAfter.
	must(plain.Transition(ctx, "rules", Open))
	eventually(t, "the open event", func() bool { s, ok := mirrorState(c, "rules"); return ok && s.State == Open })
	var open *OpenError
	if err := b.Execute(ctx, noop); !errors.As(err, &open) || open.RetryAfter <= 0 {
		t.Fatalf("the first call on the open circuit: %v", err)
	}
	remote := c.MirrorStats().Remote
	for i := 0; i < 10; i++ {
		if err := b.Execute(ctx, noop); !errors.As(err, &open) || open.RetryAfter <= 0 || open.RetryAfter > time.Minute || open.Circuit.State != Open {
			t.Fatalf("a call while the deny time is ahead: %v", err)
		}
	}
	if st := c.MirrorStats(); st.Remote != remote || st.LocalDenied != 10 {
		t.Fatalf("10 calls denied locally: %+v (remote before %d)", st, remote)
	}

	// Pinned closed: allowed locally again (the force event clears the deny).
	must(plain.Force(ctx, "rules", Closed, ForceOptions{}))
	eventually(t, "the force event", func() bool { s, ok := mirrorState(c, "rules"); return ok && s.Forced != nil })
	before = c.MirrorStats()
	if err := b.Execute(ctx, noop); err != nil {
		t.Fatal(err)
	}
	if st := c.MirrorStats(); st.LocalAllowed != before.LocalAllowed+1 || st.Remote != before.Remote {
		t.Fatalf("pinned closed: %+v", st)
	}
	must(plain.Unforce(ctx, "rules"))

	// A reset event drops the state: the next call asks cbd and re-seeds.
	must(plain.Reset(ctx, "rules"))
	eventually(t, "the reset event", func() bool { _, ok := mirrorState(c, "rules"); return !ok })
	before = c.MirrorStats()
	if err := b.Execute(ctx, noop); err != nil {
		t.Fatal(err)
	}
	if st := c.MirrorStats(); st.Remote != before.Remote+1 {
		t.Fatalf("after a reset: %+v", st)
	}
	warm(t, c, b)

	// Failures queued locally still trip the circuit in cbd (count rule).
	must(plain.Reset(ctx, "trip"))
	tb := c.Breaker("trip")
	if err := tb.Execute(ctx, noop); err != nil {
		t.Fatal(err)
	}
	warm(t, c, tb)
	for i := 0; i < 3; i++ {
		if err := tb.Execute(ctx, func(context.Context) error { return errBoom }); !errors.Is(err, errBoom) {
			t.Fatal(err)
		}
	}
	must(0, c.Flush(ctx))
	if s := must(plain.Get(ctx, "trip")); s.State != Open {
		t.Fatalf("3 failures through the mirror: %+v", s.Snapshot)
	}
	eventually(t, "denied after the trip", func() bool { return errors.Is(tb.Execute(ctx, noop), ErrOpen) })

	// Close flushes: outcomes queued just before it are counted.
	fresh := dial(t, d, WithMirror(MirrorOptions{BatchInterval: time.Hour, BatchSize: 1000}))
	fb := fresh.Breaker("close")
	if err := fb.Execute(ctx, noop); err != nil {
		t.Fatal(err)
	}
	warm(t, fresh, fb)
	for i := 0; i < 50; i++ {
		if err := fb.Execute(ctx, noop); err != nil {
			t.Fatal(err)
		}
	}
	st := fresh.MirrorStats()
	if err := fresh.Close(); err != nil {
		t.Fatal(err)
	}
	if s := must(plain.Get(ctx, "close")); s.SuccessCount != st.LocalAllowed+st.Remote {
		t.Fatalf("successCount %d after Close; %d calls", s.SuccessCount, st.LocalAllowed+st.Remote)
	}
	if err := fb.Execute(ctx, noop); !errors.Is(err, ErrClosed) {
		t.Fatalf("Execute after Close: %v", err)
	}
}

func TestWatchKeySet(t *testing.T) {
	d := startCbd(t)
	c := dial(t, d)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, watchErr := c.Watch(ctx, WatchOptions{Keys: []string{"ks/a", "ks/b", "ks/a"}})
	d.cbctl("transition", "ks/a", "open")
	d.cbctl("transition", "ks/c", "open") // not in the set
	d.cbctl("transition", "ks/b", "open")
	var keys []string
	timeout := time.After(5 * time.Second)
	for len(keys) < 2 {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("the stream ended: %v", watchErr())
			}
			keys = append(keys, ev.Key)
		case <-timeout:
			t.Fatalf("saw %v within 5 s", keys)
		}
	}
	if keys[0] != "ks/a" || keys[1] != "ks/b" {
		t.Fatalf("events of %v, want ks/a then ks/b", keys)
	}
	// Refused before anything is sent: an empty set, or a set with a key.
	for _, opts := range []WatchOptions{{Keys: []string{}}, {Keys: []string{"a"}, Key: "a"}, {Keys: []string{"ok", ""}}} {
		events, watchErr := c.Watch(context.Background(), opts)
		var e *Error
		if _, ok := <-events; ok || !errors.As(watchErr(), &e) || (e.Code != "invalid_request" && e.Code != "invalid_key") {
			t.Fatalf("%+v: %v", opts, watchErr())
		}
	}
}

func TestMirrorIdleDrop(t *testing.T) {
	d := startCbd(t)
	c := dial(t, d, WithMirror(MirrorOptions{IdleDrop: 100 * time.Millisecond}))
	b := c.Breaker("idle")
	warm(t, c, b)
	eventually(t, "the idle entry dropped", func() bool { return c.MirrorStats().Keys == 0 })
	// The next call asks cbd again, and the key is mirrored again.
	before := c.MirrorStats().Remote
	if err := b.Execute(context.Background(), noop); err != nil {
		t.Fatal(err)
	}
	if st := c.MirrorStats(); st.Remote != before+1 || st.Keys != 1 {
		t.Fatalf("after the drop %+v", st)
	}
	warm(t, c, b)
}

func TestMirrorFallsBackWhenCbdGoes(t *testing.T) {
	d := startCbd(t)
	var mu sync.Mutex
	var reported []error
	c := dial(t, d, WithBackoff(20*time.Millisecond, 100*time.Millisecond), WithMirror(MirrorOptions{
		BatchInterval: time.Hour, BatchSize: 1000,
		OnReportError: func(key string, err error) { mu.Lock(); reported = append(reported, err); mu.Unlock() },
	}))
	ctx := context.Background()
	b := c.Breaker("gone")
	warm(t, c, b)
	for i := 0; i < 10; i++ {
		if err := b.Execute(ctx, noop); err != nil {
			t.Fatal(err)
		}
	}
	d.stop()
	// The queued outcomes cannot be sent: Flush says so, and so does the
	// callback; nothing is thrown at the callers.
	if err := c.Flush(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Flush without cbd: %v", err)
	}
	if st := c.MirrorStats(); st.Lost < 10 {
		t.Fatalf("lost %+v", st)
	}
	mu.Lock()
	if len(reported) == 0 || !errors.Is(reported[0], ErrUnavailable) {
		t.Fatalf("reported %v", reported)
	}
	mu.Unlock()
	// The watch loss drops the entries: calls ask cbd, and fail open fast.
	eventually(t, "the watch loss", func() bool { return c.MirrorStats().WatchLosses == 1 })
	for i := 0; i < 20; i++ {
		start := time.Now()
		ran := false
		if err := b.Execute(ctx, func(context.Context) error { ran = true; return nil }); err != nil || !ran {
			t.Fatalf("fail open: %v %v", err, ran)
		}
		if took := time.Since(start); took > 50*time.Millisecond {
			t.Fatalf("failing open took %v", took)
		}
	}
	// cbd back: the watch comes back, and calls are local again.
	d.start()
	warm(t, c, b)
	if st := c.MirrorStats(); st.Watches < 2 {
		t.Fatalf("after recovery %+v", st)
	}
}

// The seeding and generation rules (1, 4, 5) on a mirror whose loops do not
// run, with the watch's confirmation and events played by hand: the races
// they guard against are too narrow to hit on purpose against cbd.
func TestMirrorSeedingRules(t *testing.T) {
	m := newMirror(NewClient(t.TempDir()+"/absent.sock"), MirrorOptions{})
	e := m.entry("k")
	reply := func(g int64, state State, allowed bool, retryAfterMs int64) AcquireResult {
		return AcquireResult{Allowed: allowed, RetryAfterMs: retryAfterMs, Circuit: Circuit{Snapshot: Snapshot{State: state}, Generation: g}}
	}
	ask := func() (bool, uint64) {
		d, _, _, covered, drops := e.decide(m.now())
		if d != askCbd {
			t.Fatalf("decision %d, want askCbd", d)
		}
		return covered, drops
	}
	expectAllow := func(want int64) {
		t.Helper()
		if got := e.allowGen.Load(); got != want {
			t.Fatalf("allowGen %d, want %d", got, want)
		}
	}

	// Rule 1: an acquire sent before the watch was confirmed does not seed.
	covered, drops := ask()
	w := fakeWatch("k")
	if !m.replaceWatch(w) {
		t.Fatal("replaceWatch")
	}
	m.learn(e, reply(5, Closed, true, 0), covered, drops)
	expectAllow(-1)
	// One sent after it does.
	covered, drops = ask()
	m.learn(e, reply(5, Closed, true, 0), covered, drops)
	expectAllow(5)

	// Rule 5: older events are ignored, newer ones replace the state.
	m.applyEvent(w, &Event{Kind: "transition", Key: "k", Generation: 4, Snapshot: &Snapshot{State: Open}})
	expectAllow(5)
	m.applyEvent(w, &Event{Kind: "transition", Key: "k", Generation: 6, Snapshot: &Snapshot{State: Open}})
	expectAllow(-1)
	// Rule 4: a reply older than the entry changes nothing; a denial at the
	// entry's generation teaches the deny time (rule 3 then denies locally).
	covered, drops = ask()
	m.learn(e, reply(5, Closed, true, 0), covered, drops)
	expectAllow(-1)
	m.learn(e, reply(6, Open, false, 60000), covered, drops)
	if d, _, open, _, _ := e.decide(m.now()); d != denyLocally || open.RetryAfter <= 0 || open.RetryAfter > time.Minute {
		t.Fatalf("after a denial: %d %+v", d, open)
	}
	// A newer event clears the deny time.
	m.applyEvent(w, &Event{Kind: "transition", Key: "k", Generation: 7, Snapshot: &Snapshot{State: HalfOpen}})
	ask()

	// A reset event between an acquire and its reply: the reply does not seed.
	covered, drops = ask()
	m.applyEvent(w, &Event{Kind: "reset", Key: "k"})
	m.learn(e, reply(8, Closed, true, 0), covered, drops)
	expectAllow(-1)

	// Keys that cannot be mirrored have no entry (every call asks cbd).
	if m.entry("") != nil || m.entry("bad\xff") != nil || m.entry("ctl\x01") != nil {
		t.Fatal("an invalid key got an entry")
	}

	// Pinned closed allows locally; pinned open does not.
	m.applyEvent(w, &Event{Kind: "transition", Key: "k", Generation: 9, Snapshot: &Snapshot{State: Closed}, Forced: &ForcePin{State: Closed}})
	expectAllow(9)
	m.applyEvent(w, &Event{Kind: "transition", Key: "k", Generation: 10, Snapshot: &Snapshot{State: Open}, Forced: &ForcePin{State: Open}})
	expectAllow(-1)

	// A replaced watch's events are not applied; the replacement drops every
	// entry's state, and an acquire sent before it does not seed.
	m.applyEvent(w, &Event{Kind: "transition", Key: "k", Generation: 11, Snapshot: &Snapshot{State: Closed}})
	expectAllow(11)
	covered, drops = ask2(t, e)
	w2 := fakeWatch("k")
	m.replaceWatch(w2)
	expectAllow(-1)
	m.learn(e, reply(11, Closed, true, 0), covered, drops)
	expectAllow(-1)
	m.applyEvent(w, &Event{Kind: "transition", Key: "k", Generation: 12, Snapshot: &Snapshot{State: Closed}})
	expectAllow(-1)
	m.applyEvent(w2, &Event{Kind: "transition", Key: "k", Generation: 12, Snapshot: &Snapshot{State: Closed}})
	expectAllow(12)

	// Losing the watch drops everything, and nothing seeds until a new one.
	m.watchLost(w2)
	expectAllow(-1)
	covered, drops = ask()
	m.learn(e, reply(12, Closed, true, 0), covered, drops)
	expectAllow(-1)
}

// fakeWatch is a confirmed watch of keys, for replaceWatch to close.
func fakeWatch(keys ...string) *watchConn {
	nc, _ := net.Pipe()
	w := &watchConn{nc: nc, keys: map[string]struct{}{}}
	for _, k := range keys {
		w.keys[k] = struct{}{}
	}
	return w
}

// ask2 reads what decide would capture for an acquire, whatever it decides.
func ask2(t *testing.T, e *mirrorEntry) (bool, uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.covered, e.drops
}

// At most 1000 keys are mirrored, and no more than fit a 60 KiB watch line;
// the others have no entry (every call asks cbd).
func TestMirrorBounds(t *testing.T) {
	m := newMirror(NewClient(t.TempDir()+"/absent.sock"), MirrorOptions{})
	for i := 0; i < maxMirrorKeys; i++ {
		if m.entry(fmt.Sprintf("key-%d", i)) == nil {
			t.Fatalf("key %d not mirrored", i)
		}
	}
	if m.entry("one-too-many") != nil || m.entry("key-7") == nil {
		t.Fatal("the 1001st key was mirrored, or an existing one lost")
	}
	long := newMirror(NewClient(t.TempDir()+"/absent.sock"), MirrorOptions{})
	n := 0
	for long.entry(fmt.Sprintf("%04d%s", n, strings.Repeat("k", 996))) != nil {
		n++
	}
	keys := make([]string, 0, n)
	for k := range long.keys {
		keys = append(keys, k)
	}
	line, _ := json.Marshal(map[string]any{"op": "watch", "keys": keys})
	if n < 50 || len(line) > maxRequestBytes {
		t.Fatalf("%d keys of 1000 bytes mirrored; their watch line is %d bytes", n, len(line))
	}
}

func TestMirrorQueueDropsTheOldest(t *testing.T) {
	// A mirror whose loops do not run: the queue alone.
	c := NewClient(t.TempDir() + "/absent.sock")
	m := newMirror(c, MirrorOptions{QueueLimit: 10})
	c.mirror = m
	e := m.entry("q")
	for g := int64(1); g <= 25; g++ {
		m.enqueue(e, g, g%2 == 0, true)
	}
	if st := c.MirrorStats(); st.Dropped != 15 || st.Queued != 25 || st.LocalAllowed != 25 {
		t.Fatalf("%+v", st)
	}
	var b outcomeBatch
	if !m.take(&b) || len(b.items) != 10 || b.items[0].generation != 16 || b.items[9].generation != 25 || b.start != 15 || b.end != 25 {
		t.Fatalf("took %+v", b)
	}
}

// Lines shrink while cbd answers slowly, loses a batch or refuses entries
// with backend_unavailable, and grow back while it answers fast.
func TestMirrorLineAdapts(t *testing.T) {
	m := newMirror(NewClient(t.TempDir()+"/absent.sock"), MirrorOptions{})
	e := m.entry("k")
	answer := func(took time.Duration, reply string, err error) int {
		t.Helper()
		m.enqueue(e, 1, false, true)
		b := <-m.bufs
		if !m.take(b) {
			t.Fatal("nothing to take")
		}
		b.sentAt = time.Now().Add(-took)
		m.settle(b, []byte(reply), err)
		return m.stats().LineEntries
	}
	ok := `{"id":1,"ok":true,"applied":1,"stale":0,"errors":[]}`
	if n := answer(time.Millisecond, ok, nil); n != maxLineEntries {
		t.Fatalf("fast answers at the maximum: %d", n)
	}
	if n := answer(time.Second, ok, nil); n != maxLineEntries/2 {
		t.Fatalf("after a slow answer: %d", n)
	}
	if n := answer(time.Millisecond, `{"id":1,"ok":true,"applied":0,"stale":0,"errors":[{"index":0,"code":"backend_unavailable","message":"m"}]}`, nil); n != maxLineEntries/4 {
		t.Fatalf("after backend_unavailable: %d", n)
	}
	for i := 0; i < 10; i++ {
		answer(0, "", ErrUnavailable)
	}
	if n := m.stats().LineEntries; n != minLineEntries {
		t.Fatalf("after lost batches: %d", n)
	}
	if n := answer(20*time.Millisecond, ok, nil); n != minLineEntries {
		t.Fatalf("neither slow nor fast changes nothing: %d", n)
	}
	if n := answer(time.Millisecond, ok, nil); n != 2*minLineEntries {
		t.Fatalf("a fast answer grows the line: %d", n)
	}
	if st := m.stats(); st.Lost != 10 || st.Errors != 1 || st.Applied != 4 {
		t.Fatalf("%+v", st)
	}
}

func TestEncodeBatch(t *testing.T) {
	m := newMirror(NewClient(t.TempDir()+"/absent.sock"), MirrorOptions{})
	odd := m.entry(`q"\ü`)
	long := m.entry(strings.Repeat("k", 1000))
	m.enqueue(odd, 7, true, true)
	for i := 0; i < 1500; i++ {
		m.enqueue(long, 9, false, true)
	}
	// Each line stays under 60 KiB and 1000 entries, and decodes as sent.
	total := 0
	for {
		var b outcomeBatch
		if !m.take(&b) {
			break
		}
		line := encodeBatch(nil, 42, b.items)
		if len(line) > maxRequestBytes || len(b.items) > maxLineEntries {
			t.Fatalf("a line of %d bytes, %d entries", len(line), len(b.items))
		}
		var req struct {
			Op      string `json:"op"`
			ID      int    `json:"id"`
			Reports []struct {
				Key        string `json:"key"`
				Outcome    string `json:"outcome"`
				Generation int64  `json:"generation"`
			} `json:"reports"`
		}
		if err := json.Unmarshal(line, &req); err != nil || req.Op != "reportBatch" || req.ID != 42 || len(req.Reports) != len(b.items) {
			t.Fatalf("%v: %.200s", err, line)
		}
		if total == 0 && (req.Reports[0].Key != `q"\ü` || req.Reports[0].Outcome != "failure" || req.Reports[0].Generation != 7) {
			t.Fatalf("first entry %+v", req.Reports[0])
		}
		if r := req.Reports[len(req.Reports)-1]; r.Key != long.key || r.Outcome != "success" || r.Generation != 9 {
			t.Fatalf("last entry %+v", r)
		}
		total += len(b.items)
	}
	if total != 1501 {
		t.Fatalf("%d entries sent of 1501", total)
	}
}

// ---- Multi-process: staleness, exactness, the probe race ----

// backends runs test once per backend: memory, and Redis (a redis-server
// started for it on a free port).
func backends(t *testing.T, test func(t *testing.T, cbdArgs ...string)) {
	t.Run("memory", func(t *testing.T) { test(t) })
	t.Run("redis", func(t *testing.T) {
		port := startRedis(t)
		test(t, "--backend", "redis", "--redis", fmt.Sprintf("tcp://127.0.0.1:%d", port))
	})
}

// startRedis starts a redis-server (no persistence) on a free port and
// stops it when the test ends.
func startRedis(t *testing.T) int {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is needed for the Redis backend cases: %v", err)
	}
	for attempt := 0; ; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		cmd := exec.Command(path, "--save", "", "--appendonly", "no", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--loglevel", "warning")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		stop := func() {
			_ = cmd.Process.Kill()
			<-exited
		}
		if redisAnswers(port, exited) {
			t.Cleanup(stop)
			return port
		}
		stop()
		if attempt == 4 {
			t.Fatal("redis-server did not answer on a free port (5 tries)")
		}
	}
}

// redisAnswers waits (up to 10 s) for PONG on port; false if the server
// exited first (the port was taken meanwhile).
func redisAnswers(port int, exited <-chan struct{}) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		if nc, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			_ = nc.SetDeadline(time.Now().Add(time.Second))
			_, _ = nc.Write([]byte("PING\r\n"))
			line, _ := bufio.NewReader(nc).ReadString('\n')
			nc.Close()
			if strings.HasPrefix(line, "+PONG") {
				return true
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// childResult is the last line a mirror child prints.
type childResult struct {
	FirstDenialNs int64       `json:"firstDenialNs"`
	DeniedAfter   int         `json:"deniedAfter"`
	Stats         MirrorStats `json:"stats"`
	// Refused counts the outcomes cbd did not record, by error code.
	Refused map[string]int `json:"refused"`
}

func (ch *childProcess) result(t *testing.T) childResult {
	t.Helper()
	var r childResult
	if line := ch.readLine(t); json.Unmarshal([]byte(line), &r) != nil {
		t.Fatalf("a child said %q", line)
	}
	return r
}

func TestMirrorStaleness(t *testing.T) { backends(t, testMirrorStaleness) }

// 8 mirroring processes call a closed circuit; another client opens it. Each
// must see a denial, and then be denied (locally) until the deny time.
func testMirrorStaleness(t *testing.T, cbdArgs ...string) {
	d := startCbd(t, append([]string{"--reset-timeout-ms", "60000"}, cbdArgs...)...)
	c := dial(t, d)
	ctx := context.Background()
	must(c.Reset(ctx, "stale"))
	var children []*childProcess
	for i := 0; i < 8; i++ {
		children = append(children, startChild(t, "mirror-stale", d.socket, "stale", "-"))
	}
	for i, ch := range children {
		if line := ch.readLine(t); line != "ready" {
			t.Fatalf("child %d said %q", i, line)
		}
	}
	sent := time.Now()
	opened := must(c.Transition(ctx, "stale", Open))
	answered := time.Now()
	var lags []time.Duration
	for i, ch := range children {
		r := ch.result(t)
		if err := ch.cmd.Wait(); err != nil {
			t.Fatalf("child %d: %v", i, err)
		}
		if r.DeniedAfter != 100 || r.Stats.LocalDenied < 1 {
			t.Fatalf("child %d: after its first denial %d of 100 calls denied (%+v)", i, r.DeniedAfter, r.Stats)
		}
		lags = append(lags, time.Unix(0, r.FirstDenialNs).Sub(sent))
	}
	if opened.State != Open {
		t.Fatalf("the transition %+v", opened)
	}
	sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
	t.Logf("transition sent → first denial in each of 8 processes: min %v, median %v, max %v (the transition's round trip: %v)",
		lags[0], lags[len(lags)/2], lags[len(lags)-1], answered.Sub(sent))
}

func TestMirrorExactness(t *testing.T) { backends(t, testMirrorExactness) }

// 8 processes × 10,000 guarded failures through the mirror: cbd counts
// exactly 80,000.
func testMirrorExactness(t *testing.T, cbdArgs ...string) {
	d := startCbd(t, cbdArgs...)
	c := dial(t, d)
	ctx := context.Background()
	must(c.Reset(ctx, "exact"))
	threshold := int64(1000000000)
	must(c.Configure(ctx, "exact", map[string]*int64{FieldFailureThreshold: &threshold}))
	var children []*childProcess
	for i := 0; i < 8; i++ {
		children = append(children, startChild(t, "mirror-failures", d.socket, "exact", "10000"))
	}
	for i, ch := range children {
		if line := ch.readLine(t); line != "ready" {
			t.Fatalf("child %d said %q", i, line)
		}
	}
	start := time.Now()
	for _, ch := range children {
		if _, err := ch.stdin.Write([]byte("go\n")); err != nil {
			t.Fatal(err)
		}
	}
	var local int64
	smallestLine := maxLineEntries
	for i, ch := range children {
		r := ch.result(t)
		if err := ch.cmd.Wait(); err != nil {
			t.Fatalf("child %d: %v", i, err)
		}
		st := r.Stats
		if st.LocalAllowed == 0 || st.Dropped != 0 || st.Lost != 0 || st.Errors != 0 || st.Stale != 0 || st.LocalAllowed+st.Remote != 10000 {
			t.Fatalf("child %d: %+v; refused %v", i, st, r.Refused)
		}
		local += st.LocalAllowed
		if st.LineEntries < smallestLine {
			smallestLine = st.LineEntries
		}
	}
	took := time.Since(start)
	s := must(c.Get(ctx, "exact"))
	if s.FailureCount != 80000 || s.State != Closed {
		t.Fatalf("failureCount %d (state %s), want exactly 80000", s.FailureCount, s.State)
	}
	t.Logf("80,000 failures from 8 processes in %v; %d decided locally; reportBatch lines of %d outcomes at the end (the smallest)", took, local, smallestLine)
}

func TestMirrorProbeRace(t *testing.T) { backends(t, testMirrorProbeRace) }

// 10 mirroring processes race for a half-open circuit with halfOpenMax 1:
// exactly one gets the probe, and its report settles the circuit at once.
func testMirrorProbeRace(t *testing.T, cbdArgs ...string) {
	d := startCbd(t, append([]string{"--reset-timeout-ms", "60000", "--probe-lease-ms", "60000", "--half-open-max", "1"}, cbdArgs...)...)
	c := dial(t, d)
	ctx := context.Background()
	must(c.Reset(ctx, "probe"))
	must(c.Transition(ctx, "probe", Open))
	var children []*childProcess
	for i := 0; i < 10; i++ {
		children = append(children, startChild(t, "mirror-probe", d.socket, "probe", "-"))
	}
	for i, ch := range children {
		if line := ch.readLine(t); line != "ready" {
			t.Fatalf("child %d said %q", i, line)
		}
	}
	// Every child now denies locally (open, deny time learned); the event of
	// this transition clears that, and they all ask cbd at once.
	must(c.Transition(ctx, "probe", HalfOpen))
	for _, ch := range children {
		if _, err := ch.stdin.Write([]byte("go\n")); err != nil {
			t.Fatal(err)
		}
	}
	var prober *childProcess
	for i, ch := range children {
		switch line := ch.readLine(t); line {
		case "probe":
			if prober != nil {
				t.Fatalf("child %d got a second probe", i)
			}
			prober = ch
		case "denied":
			if err := ch.cmd.Wait(); err != nil {
				t.Fatalf("child %d: %v", i, err)
			}
		default:
			t.Fatalf("child %d said %q", i, line)
		}
	}
	if prober == nil {
		t.Fatal("no child got the probe")
	}
	if s := must(c.Get(ctx, "probe")); s.State != HalfOpen {
		t.Fatalf("while the probe runs: %+v", s.Snapshot)
	}
	if _, err := prober.stdin.Write([]byte("release\n")); err != nil {
		t.Fatal(err)
	}
	if line := prober.readLine(t); line != "reported" {
		t.Fatalf("the prober said %q", line)
	}
	if err := prober.cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	// Reported directly, not batched: settled when Execute returned.
	if s := must(c.Get(ctx, "probe")); s.State != Closed {
		t.Fatalf("after the probe's success: %+v", s.Snapshot)
	}
}

// runMirrorChild is a mirror child's whole life (see the tests above):
//
//	mirror-failures SOCKET KEY N: "ready", waits for a line, N failing calls, a flush, the result.
//	mirror-stale SOCKET KEY -: warms up, "ready", calls until denied, 100 calls more, the result.
//	mirror-probe SOCKET KEY -: warms up on an open circuit, "ready", waits for a line and for
//	    half-open, then up to 20 calls: "probe" (and waits for a line, then "reported") when
//	    one runs, "denied" when none does.
func runMirrorChild(mode string, args []string) int {
	socket, key := args[0], args[1]
	ctx := context.Background()
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, mode+": "+format+"\n", a...)
		return 1
	}
	var codesMu sync.Mutex
	codes := map[string]int{} // what cbd refused, for the result
	c, err := Dial(ctx, socket, WithTimeout(30*time.Second), WithMirror(MirrorOptions{
		OnReportError: func(key string, err error) {
			code := err.Error()
			var e *Error
			if errors.As(err, &e) {
				code = e.Code
			}
			codesMu.Lock()
			codes[code]++
			codesMu.Unlock()
		},
	}))
	if err != nil {
		return fail("%v", err)
	}
	defer c.Close()
	b := c.Breaker(key)
	stdin := bufio.NewReader(os.Stdin)
	deadline := time.Now().Add(20 * time.Second)
	printResult := func(r childResult) {
		r.Stats = c.MirrorStats()
		codesMu.Lock()
		r.Refused = codes
		line, _ := json.Marshal(r)
		codesMu.Unlock()
		fmt.Println(string(line))
	}
	switch mode {
	case "mirror-failures":
		n, err := strconv.Atoi(args[2])
		if err != nil {
			return fail("%v", err)
		}
		fmt.Println("ready")
		if _, err := stdin.ReadString('\n'); err != nil {
			return fail("%v", err)
		}
		for i := 0; i < n; i++ {
			if err := b.Execute(ctx, func(context.Context) error { return errBoom }); !errors.Is(err, errBoom) {
				return fail("call %d: %v", i, err)
			}
		}
		flushCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := c.Flush(flushCtx); err != nil {
			return fail("flush: %v", err)
		}
		printResult(childResult{})
		return 0

	case "mirror-stale":
		for c.MirrorStats().LocalAllowed == 0 {
			if err := b.Execute(ctx, noop); err != nil {
				return fail("warming up: %v", err)
			}
			if time.Now().After(deadline) {
				return fail("no local decision within 20 s")
			}
			time.Sleep(200 * time.Microsecond)
		}
		fmt.Println("ready")
		var first int64
		for first == 0 {
			switch err := b.Execute(ctx, noop); {
			case err == nil:
				time.Sleep(100 * time.Microsecond) // a caller at a few thousand calls a second
			case errors.Is(err, ErrOpen):
				first = time.Now().UnixNano()
			default:
				return fail("%v", err)
			}
			if time.Now().After(deadline) {
				return fail("no denial within 20 s")
			}
		}
		denied := 0
		for i := 0; i < 100; i++ {
			if errors.Is(b.Execute(ctx, noop), ErrOpen) {
				denied++
			}
		}
		printResult(childResult{FirstDenialNs: first, DeniedAfter: denied})
		return 0

	case "mirror-probe":
		ranEarly := func(context.Context) error { return errors.New("ran on an open circuit") }
		for c.MirrorStats().LocalDenied == 0 {
			if err := b.Execute(ctx, ranEarly); !errors.Is(err, ErrOpen) {
				return fail("warming up: %v", err)
			}
			if time.Now().After(deadline) {
				return fail("no local denial within 20 s")
			}
			time.Sleep(time.Millisecond)
		}
		fmt.Println("ready")
		if _, err := stdin.ReadString('\n'); err != nil {
			return fail("%v", err)
		}
		for {
			if s, ok := mirrorState(c, key); ok && s.State == HalfOpen {
				break
			}
			if time.Now().After(deadline) {
				return fail("the half-open event did not come within 20 s")
			}
			time.Sleep(100 * time.Microsecond)
		}
		probe := func(context.Context) error {
			fmt.Println("probe")
			_, err := stdin.ReadString('\n')
			return err
		}
		for i := 0; i < 20; i++ {
			switch err := b.Execute(ctx, probe); {
			case err == nil:
				fmt.Println("reported")
				return 0
			case !errors.Is(err, ErrOpen):
				return fail("%v", err)
			}
			time.Sleep(time.Millisecond)
		}
		fmt.Println("denied")
		return 0
	}
	return fail("unknown child mode")
}
