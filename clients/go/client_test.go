package cbd

// The client end to end against a real cbd: concurrency (goroutines and
// processes), the probe race, failing fast, every operation, position
// matching, the breaker and watch.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestEightGoroutinesShareOneConnection(t *testing.T) {
	d := startCbd(t)
	c := dial(t, d)
	ctx := context.Background()
	counts := make([][]int64, 8)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				s, err := c.Failure(ctx, "shared")
				if err != nil {
					errs <- err
					return
				}
				counts[g] = append(counts[g], s.FailureCount)
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if s := must(c.Get(ctx, "shared")); s.FailureCount != 8000 {
		t.Fatalf("failureCount %d, want 8000", s.FailureCount)
	}
	// Each reply went to the call that sent it: the counts seen are 1..8000,
	// each once.
	var all []int64
	for _, cs := range counts {
		all = append(all, cs...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	for i, n := range all {
		if n != int64(i+1) {
			t.Fatalf("count %d seen at position %d: replies were mismatched", n, i)
		}
	}
	// One connection for the client, one for startCbd's readiness check.
	if st := must(c.Stats(ctx)); st.Connections.Total > 2 {
		t.Fatalf("%d connections; the client should use one", st.Connections.Total)
	}
}

func TestEightProcessesCountExactly(t *testing.T) {
	d := startCbd(t)
	var children []*childProcess
	for i := 0; i < 8; i++ {
		children = append(children, startChild(t, "failures", d.socket, "shared", "1000"))
	}
	for i, ch := range children {
		if err := ch.cmd.Wait(); err != nil {
			t.Fatalf("child %d: %v", i, err)
		}
	}
	c := dial(t, d)
	if s := must(c.Get(context.Background(), "shared")); s.FailureCount != 8000 {
		t.Fatalf("failureCount %d, want 8000", s.FailureCount)
	}
}

func TestTenProcessesRaceForOneProbe(t *testing.T) {
	d := startCbd(t, "--failure-threshold", "1", "--reset-timeout-ms", "300", "--probe-lease-ms", "60000")
	c := dial(t, d)
	ctx := context.Background()
	a := must(c.Acquire(ctx, "probe"))
	if r := must(c.Report(ctx, "probe", Failure, WithAcquired(a))); r.Circuit.State != Open {
		t.Fatalf("one failure should open the circuit: %+v", r)
	}
	var children []*childProcess
	for i := 0; i < 10; i++ {
		ch := startChild(t, "probe", d.socket, "probe", "-")
		if line := ch.readLine(t); line != "ready" {
			t.Fatalf("child said %q", line)
		}
		children = append(children, ch)
	}
	time.Sleep(350 * time.Millisecond) // past the reset timeout
	for _, ch := range children {
		if _, err := ch.stdin.Write([]byte("go\n")); err != nil {
			t.Fatal(err)
		}
	}
	allowed := 0
	for i, ch := range children {
		switch line := ch.readLine(t); line {
		case "allowed":
			allowed++
		case "denied":
		default:
			t.Fatalf("child %d said %q", i, line)
		}
		if err := ch.cmd.Wait(); err != nil {
			t.Fatalf("child %d: %v", i, err)
		}
	}
	if allowed != 1 {
		t.Fatalf("%d of 10 got the probe, want exactly 1", allowed)
	}
	if s := must(c.Get(ctx, "probe")); s.State != HalfOpen {
		t.Fatalf("state %s, want half-open", s.State)
	}
}

type childProcess struct {
	cmd    *exec.Cmd
	stdin  interface{ Write([]byte) (int, error) }
	stdout *bufio.Reader
}

func startChild(t *testing.T, mode string, args ...string) *childProcess {
	t.Helper()
	cmd := child(t, mode, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return &childProcess{cmd: cmd, stdin: stdin, stdout: bufio.NewReader(stdout)}
}

func (ch *childProcess) readLine(t *testing.T) string {
	t.Helper()
	line, err := ch.stdout.ReadString('\n')
	if err != nil {
		t.Fatalf("reading a child's output: %v", err)
	}
	return strings.TrimSpace(line)
}

// fast runs call and fails the test unless it returned, within 50 ms, an
// error matching ErrUnavailable.
func fast(t *testing.T, what string, call func() error) {
	t.Helper()
	start := time.Now()
	err := call()
	took := time.Since(start)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("%s: got %v, want ErrUnavailable", what, err)
	}
	if took >= 50*time.Millisecond {
		t.Fatalf("%s: took %v, want well under 50 ms", what, took)
	}
}

func TestFailsFastWhenTheSocketIsMissing(t *testing.T) {
	ctx := context.Background()
	missing := filepath.Join(t.TempDir(), "absent.sock")
	fast(t, "Dial", func() error { _, err := Dial(ctx, missing); return err })
	c := NewClient(missing)
	defer c.Close()
	for i := 0; i < 100; i++ {
		fast(t, "Get", func() error { _, err := c.Get(ctx, "k"); return err })
	}
	var e *Error
	if _, err := c.Get(ctx, "k"); !errors.As(err, &e) || e.Code != CodeUnavailable || !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("got %v", err)
	}
	// The breaker fails open, or closed when told to.
	ran := false
	if err := c.Breaker("k").Execute(ctx, func(context.Context) error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("fail open: err %v, ran %v", err, ran)
	}
	ran = false
	fast(t, "Execute FailClosed", func() error {
		return c.Breaker("k", FailClosed()).Execute(ctx, func(context.Context) error { ran = true; return nil })
	})
	if ran {
		t.Fatal("FailClosed ran the call")
	}
}

func TestFailsFastWhenTheSocketRefuses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "refusing.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close() // the socket file stays; connecting to it is refused
	c := NewClient(path)
	defer c.Close()
	fast(t, "first call", func() error { _, err := c.Failure(context.Background(), "k"); return err })
	var e *Error
	_, err = Dial(context.Background(), path)
	if !errors.As(err, &e) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("Dial: got %v, want ECONNREFUSED", err)
	}
}

func TestFailsFastAfterCbdStopsAndRecovers(t *testing.T) {
	d := startCbd(t)
	c := dial(t, d, WithBackoff(20*time.Millisecond, 100*time.Millisecond))
	ctx := context.Background()
	must(c.Failure(ctx, "r"))
	d.stop()
	// The first call may find the dying connection (connection_lost); from
	// then on every call fails fast.
	for i := 0; i < 50; i++ {
		fast(t, fmt.Sprintf("call %d while down", i), func() error { _, err := c.Get(ctx, "r"); return err })
	}
	d.start()
	deadline := time.Now().Add(2 * time.Second)
	for {
		s, err := c.Failure(ctx, "r")
		if err == nil {
			if s.FailureCount != 1 { // memory only: a fresh circuit
				t.Fatalf("after restart %+v", s.Snapshot)
			}
			break
		}
		if !errors.Is(err, ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("no recovery: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestATimeoutMarksAHungCbdDown(t *testing.T) {
	d := startCbd(t)
	c := dial(t, d, WithTimeout(200*time.Millisecond), WithBackoff(time.Second, time.Second))
	ctx := context.Background()
	must(c.Ping(ctx))
	if err := d.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = d.cmd.Process.Signal(syscall.SIGCONT) }()
	start := time.Now()
	_, err := c.Get(ctx, "k")
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeTimeout || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("got %v, want a timeout", err)
	}
	if took := time.Since(start); took < 150*time.Millisecond || took > 2*time.Second {
		t.Fatalf("the timeout took %v", took)
	}
	fast(t, "the next call", func() error { _, err := c.Get(ctx, "k"); return err })
	// The caller's own deadline is the caller's: it does not mark cbd down.
	// (Dialing a stopped cbd works: the kernel accepts into the backlog.)
	c2 := dial(t, d)
	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if _, err := c2.Get(short, "k"); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("got %v, want the caller's deadline", err)
	}
	c2.mu.Lock()
	down := time.Now().Before(c2.downUntil)
	c2.mu.Unlock()
	if down {
		t.Fatal("the caller's deadline marked the connection down")
	}
}

func TestOperations(t *testing.T) {
	d := startCbd(t, "--failure-threshold", "2", "--reset-timeout-ms", "150")
	c := dial(t, d)
	ctx := context.Background()

	a := must(c.Acquire(ctx, "api"))
	if !a.Allowed || a.Circuit.State != Closed {
		t.Fatalf("acquire %+v", a)
	}
	must(c.Report(ctx, "api", Failure, WithGeneration(a.Circuit.Generation)))
	opened := must(c.Report(ctx, "api", Failure, WithGeneration(a.Circuit.Generation)))
	if opened.Circuit.Transition == nil || *opened.Circuit.Transition != (Transition{From: Closed, To: Open, Cause: "threshold"}) {
		t.Fatalf("report %+v", opened)
	}
	denied := must(c.Acquire(ctx, "api"))
	if denied.Allowed || denied.RetryAfterMs <= 0 || denied.RetryAfterMs > 150 {
		t.Fatalf("acquire while open %+v", denied)
	}
	if stale := must(c.Report(ctx, "api", Success, WithGeneration(a.Circuit.Generation))); !stale.Stale {
		t.Fatalf("a report at an old generation should be stale: %+v", stale)
	}
	time.Sleep(200 * time.Millisecond)
	probe := must(c.Acquire(ctx, "api"))
	if !probe.Allowed || probe.Permit == "" || probe.Circuit.State != HalfOpen {
		t.Fatalf("probe %+v", probe)
	}
	var e *Error
	if _, err := c.Report(ctx, "api", Success); !errors.As(err, &e) || e.Code != "no_permit" {
		t.Fatalf("report without a permit: %v", err)
	}
	if closed := must(c.Report(ctx, "api", Success, WithAcquired(probe))); closed.Circuit.State != Closed {
		t.Fatalf("probe success %+v", closed)
	}

	_, err := c.Transition(ctx, "api", Open, IfState(HalfOpen))
	if !errors.As(err, &e) || e.Code != "conflict" {
		t.Fatalf("conditional transition: %v", err)
	}
	current, ok := e.Circuit()
	if !ok || current.State != Closed {
		t.Fatalf("a conflict carries the circuit: %+v %v", current, ok)
	}
	if _, err := c.Transition(ctx, "api", Open, IfGeneration(current.Generation+1)); !errors.As(err, &e) || e.Code != "conflict" {
		t.Fatalf("conditional transition on generation: %v", err)
	}
	moved := must(c.Transition(ctx, "api", Open, IfState(Closed), IfGeneration(current.Generation)))
	if moved.State != Open || moved.Generation <= current.Generation {
		t.Fatalf("conditional transition %+v", moved)
	}

	pinned := must(c.Force(ctx, "api", Closed, ForceOptions{TTL: time.Minute, Reason: "go test"}))
	if pinned.Forced == nil || pinned.Forced.Reason != "go test" || pinned.Forced.Until == nil || pinned.State != Closed {
		t.Fatalf("force %+v", pinned)
	}
	if _, err := c.Transition(ctx, "api", Open); !errors.As(err, &e) || e.Code != "forced" {
		t.Fatalf("transition while pinned: %v", err)
	}
	if unpinned := must(c.Unforce(ctx, "api")); unpinned.Forced != nil {
		t.Fatalf("unforce %+v", unpinned)
	}

	seven := int64(7)
	p := must(c.Configure(ctx, "api", map[string]*int64{FieldFailureThreshold: &seven}))
	if p.Policy.FailureThreshold != 7 || p.Source[FieldFailureThreshold] != "key" || p.Policy.ResetTimeoutMs != 150 {
		t.Fatalf("configure %+v", p)
	}
	if p := must(c.Policy(ctx, "api")); p.Policy.FailureThreshold != 7 {
		t.Fatalf("policy %+v", p)
	}
	if p := must(c.Configure(ctx, "api", map[string]*int64{FieldFailureThreshold: nil})); p.Policy.FailureThreshold != 2 {
		t.Fatalf("dropping a field %+v", p)
	}
	must(c.Configure(ctx, "api", map[string]*int64{FieldHalfOpenMax: &seven}))
	if p := must(c.Configure(ctx, "api", nil)); p.Policy.HalfOpenMax != 1 || p.Source[FieldHalfOpenMax] != "default" {
		t.Fatalf("dropping the override %+v", p)
	}
	if _, err := c.Configure(ctx, "api", map[string]*int64{"failureTreshold": &seven}); !errors.As(err, &e) || e.Code != "invalid_request" {
		t.Fatalf("a misspelt field: %v", err)
	}

	for _, k := range []string{"l/a", "l/b", "l/c"} {
		must(c.Get(ctx, k))
	}
	page := must(c.List(ctx, ListOptions{Prefix: "l/", Limit: 2}))
	if len(page.Circuits) != 2 || page.Circuits[0].Key != "l/a" || page.Next == nil {
		t.Fatalf("list page 1 %+v", page)
	}
	page = must(c.List(ctx, ListOptions{Prefix: "l/", Limit: 2, After: *page.Next}))
	if len(page.Circuits) != 1 || page.Circuits[0].Key != "l/c" || page.Next != nil || page.Circuits[0].Circuit.Generation == 0 {
		t.Fatalf("list page 2 %+v", page)
	}
	must(c.Transition(ctx, "l/b", Open))
	if open := must(c.List(ctx, ListOptions{State: Open})); len(open.Circuits) != 1 || open.Circuits[0].Key != "l/b" {
		t.Fatalf("list open %+v", open)
	}

	if ping := must(c.Ping(ctx)); ping.Protocol < 7 || ping.Version == "" {
		t.Fatalf("ping %+v", ping)
	}
	st := must(c.Stats(ctx))
	if st.Requests["acquire"] < 3 || st.Circuits == nil || st.Circuits.Total != 4 || st.Storage != nil {
		t.Fatalf("stats %+v", st)
	}
	if text := must(c.Metrics(ctx, false)); !strings.Contains(text, `cbd_requests_total{op="acquire"}`) {
		t.Fatalf("metrics %q", text)
	}
}

func TestAReplyWithoutIDIsMatchedByPosition(t *testing.T) {
	d := startCbd(t)
	c := dial(t, d, WithTimeout(2*time.Second))
	ctx := context.Background()
	// A lone surrogate: cbd cannot read this request's id, so its parse_error
	// reply has none. It must still reach this call, at once, and the calls
	// around it their own replies.
	var wg sync.WaitGroup
	results := make([]error, 20)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if i == 10 {
				id := c.ids.Add(1)
				_, results[i] = c.roundTripLine(ctx, id, []byte(fmt.Sprintf(`{"op":"get","key":"\ud800","id":%d}`+"\n", id)))
				return
			}
			_, results[i] = c.Failure(ctx, "around")
		}(i)
	}
	wg.Wait()
	for i, err := range results {
		var e *Error
		if i == 10 {
			if !errors.As(err, &e) || e.Code != "parse_error" {
				t.Fatalf("the id-less reply: %v", err)
			}
		} else if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if s := must(c.Get(ctx, "around")); s.FailureCount != 19 {
		t.Fatalf("failureCount %d, want 19", s.FailureCount)
	}
}

func TestBreaker(t *testing.T) {
	d := startCbd(t, "--failure-threshold", "2", "--reset-timeout-ms", "200")
	c := dial(t, d)
	ctx := context.Background()
	b := c.Breaker("payments")
	boom := errors.New("boom")

	if err := b.Execute(ctx, func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := b.Execute(ctx, func(context.Context) error { return boom }); !errors.Is(err, boom) {
			t.Fatalf("Execute returns the call's error: %v", err)
		}
	}
	ran := false
	err := b.Execute(ctx, func(context.Context) error { ran = true; return nil })
	var open *OpenError
	if !errors.Is(err, ErrOpen) || !errors.As(err, &open) || ran {
		t.Fatalf("after 2 failures: err %v, ran %v", err, ran)
	}
	if open.RetryAfter <= 0 || open.RetryAfter > 200*time.Millisecond || open.Circuit.State != Open {
		t.Fatalf("open error %+v", open)
	}

	// The probe is reported with its permit and generation: a success closes.
	time.Sleep(250 * time.Millisecond)
	if err := b.Execute(ctx, func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if s := must(c.Get(ctx, "payments")); s.State != Closed {
		t.Fatalf("a successful probe should close: %+v", s.Snapshot)
	}

	// Errors the predicate does not count are successes (and still returned).
	notMine := errors.New("not found")
	lenient := c.Breaker("lenient", CountAsFailure(func(err error) bool { return err != nil && !errors.Is(err, notMine) }))
	for i := 0; i < 3; i++ {
		if err := lenient.Execute(ctx, func(context.Context) error { return notMine }); !errors.Is(err, notMine) {
			t.Fatal(err)
		}
	}
	if s := must(c.Get(ctx, "lenient")); s.State != Closed || s.FailureCount != 0 || s.SuccessCount != 3 {
		t.Fatalf("lenient %+v", s.Snapshot)
	}

	// A panic is a failure, and goes on.
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the panic was swallowed")
			}
		}()
		_ = c.Breaker("panics").Execute(ctx, func(context.Context) error { panic("call failed") })
	}()
	if s := must(c.Get(ctx, "panics")); s.FailureCount != 1 {
		t.Fatalf("panics %+v", s.Snapshot)
	}

	// A bad key is the caller's error, not a reason to fail open.
	if err := c.Breaker("").Execute(ctx, func(context.Context) error { return nil }); errors.Is(err, ErrUnavailable) || err == nil {
		t.Fatalf("empty key: %v", err)
	}

	// cbd gone: fail open, fast.
	d.stop()
	start := time.Now()
	ran = false
	if err := b.Execute(ctx, func(context.Context) error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("fail open: err %v, ran %v", err, ran)
	}
	if took := time.Since(start); took > 50*time.Millisecond {
		t.Fatalf("failing open took %v", took)
	}
}

func TestWatch(t *testing.T) {
	d := startCbd(t)
	c := dial(t, d)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, watchErr := c.Watch(ctx, WatchOptions{Prefix: "w/"})
	// Another process causes the changes.
	d.cbctl("transition", "w/x", "open")
	d.cbctl("transition", "other", "open") // not watched
	d.cbctl("reset", "w/x")
	var seen []Event
	timeout := time.After(5 * time.Second)
	for len(seen) < 2 {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("the stream ended: %v", watchErr())
			}
			seen = append(seen, ev)
		case <-timeout:
			t.Fatalf("saw %+v within 5 s", seen)
		}
	}
	if seen[0].Kind != "transition" || seen[0].Key != "w/x" || seen[0].Cause != "manual" || seen[0].From != Closed || seen[0].To != Open || seen[0].Snapshot == nil || seen[0].Generation == 0 {
		t.Fatalf("first event %+v", seen[0])
	}
	if seen[1].Kind != "reset" || seen[1].Key != "w/x" {
		t.Fatalf("second event %+v", seen[1])
	}
	cancel()
	for range events {
	}
	if err := watchErr(); err != nil {
		t.Fatalf("a watch its caller ended: %v", err)
	}

	// Refused and unreachable watches end at once with the reason.
	events, watchErr = c.Watch(context.Background(), WatchOptions{Key: "a", Prefix: "b"})
	if _, ok := <-events; ok || watchErr() == nil {
		t.Fatal("a watch of a key and a prefix should fail")
	}
	d.stop()
	start := time.Now()
	events, watchErr = c.Watch(context.Background(), WatchOptions{})
	if _, ok := <-events; ok || !errors.Is(watchErr(), ErrUnavailable) || time.Since(start) > 50*time.Millisecond {
		t.Fatalf("a watch without cbd: %v after %v", watchErr(), time.Since(start))
	}
}

func TestSocketPathRule(t *testing.T) {
	t.Setenv("CBD_SOCKET", "")
	t.Setenv("XDG_RUNTIME_DIR", "")
	if got := SocketPath(""); got != "/run/cbd/cbd.sock" {
		t.Fatalf("default %q", got)
	}
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	want := "/run/user/1000/cbd/cbd.sock"
	if os.Getuid() == 0 {
		want = "/run/cbd/cbd.sock"
	}
	if got := SocketPath(""); got != want {
		t.Fatalf("with XDG_RUNTIME_DIR %q, want %q", got, want)
	}
	t.Setenv("CBD_SOCKET", "/tmp/env.sock")
	if got := SocketPath(""); got != "/tmp/env.sock" {
		t.Fatalf("with CBD_SOCKET %q", got)
	}
	if got := SocketPath("/tmp/given.sock"); got != "/tmp/given.sock" {
		t.Fatalf("given %q", got)
	}
	if got := NewClient("").Path(); got != "/tmp/env.sock" {
		t.Fatalf("NewClient(\"\") uses %q", got)
	}
}

func TestClose(t *testing.T) {
	d := startCbd(t)
	c := dial(t, d)
	must(c.Ping(context.Background()))
	c.Close()
	if _, err := c.Ping(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestParseHead(t *testing.T) {
	for _, tc := range []struct {
		line string
		id   uint64 // 0: none
		ok   bool
		code string
	}{
		{`{"id":7,"ok":true,"removed":true}`, 7, true, ""},
		{`{"id":18446744073709551615,"ok":true}`, 18446744073709551615, true, ""},
		{`{"id":7,"ok":false,"error":{"code":"invalid_key","message":"m"}}`, 7, false, "invalid_key"},
		{`{"ok":false,"error":{"code":"parse_error","message":"m"}}`, 0, false, "parse_error"},
		{`{"ok":true,"id":9}`, 9, true, ""},
	} {
		head, err := parseHead([]byte(tc.line))
		if err != nil || head.OK != tc.ok || (head.ID == nil) != (tc.id == 0) || (head.ID != nil && *head.ID != tc.id) ||
			(tc.code != "" && (head.Error == nil || head.Error.Code != tc.code)) {
			t.Fatalf("%s: %+v %v", tc.line, head, err)
		}
	}
	if _, err := parseHead([]byte(`{"id":7,"ok":tru`)); err == nil {
		t.Fatal("a broken line parsed")
	}
}
