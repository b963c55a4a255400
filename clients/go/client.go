package cbd

// Every protocol operation as a method. Inputs are checked here against the
// protocol's limits before anything is sent, so that a bad argument gets a
// clear error of its own and no line can grow past cbd's 64 KiB limit (which
// would close the connection that every goroutine shares).

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// request is every field any operation sends; empty ones are left out.
type request struct {
	Op               string          `json:"op"`
	ID               uint64          `json:"id"`
	Key              string          `json:"key,omitempty"`
	To               State           `json:"to,omitempty"`
	Expect           State           `json:"expect,omitempty"`
	ExpectGeneration *int64          `json:"expectGeneration,omitempty"`
	Outcome          Outcome         `json:"outcome,omitempty"`
	Generation       *int64          `json:"generation,omitempty"`
	Permit           string          `json:"permit,omitempty"`
	State            State           `json:"state,omitempty"`
	TTLMs            int64           `json:"ttlMs,omitempty"`
	Reason           string          `json:"reason,omitempty"`
	Policy           json.RawMessage `json:"policy,omitempty"`
	Prefix           string          `json:"prefix,omitempty"`
	Limit            int             `json:"limit,omitempty"`
	After            string          `json:"after,omitempty"`
	PerCircuit       bool            `json:"perCircuit,omitempty"`
}

// The protocol's limits (docs/PROTOCOL.md, Limits).
const (
	maxKeyBytes    = 1024
	maxPermitBytes = 64
	maxReasonBytes = 256
	maxListLimit   = 10000
	maxTTL         = 366 * 24 * time.Hour
	maxWireInt     = 1<<53 - 1
	// Protocol 9: a reportBatch holds at most 1000 entries and a key-set
	// watch at most 1000 keys; the client keeps each such line under 60 KiB,
	// safely inside cbd's default 64 KiB line limit.
	maxReportBatch  = 1000
	maxWatchKeys    = 1000
	maxRequestBytes = 60 << 10
)

func invalid(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

func checkKey(key string) error {
	if len(key) == 0 || len(key) > maxKeyBytes {
		return invalid("invalid_key", "a key is 1 to %d bytes, not %d", maxKeyBytes, len(key))
	}
	if hasControl(key) {
		return invalid("invalid_key", "a key may not contain a control character: %q", key)
	}
	return nil
}

func checkState(s State, allowed ...State) error {
	for _, a := range allowed {
		if s == a {
			return nil
		}
	}
	return invalid("invalid_state", "state %q; expected one of %v", s, allowed)
}

// circuitOp runs an operation whose reply is a circuit.
func (c *Client) circuitOp(ctx context.Context, req *request) (Circuit, error) {
	line, err := c.roundTrip(ctx, req)
	if err != nil {
		return Circuit{}, err
	}
	var w wireCircuit
	if err := decode(line, &w); err != nil {
		return Circuit{}, err
	}
	if w.Snapshot == nil {
		return Circuit{}, &Error{Code: CodeBadReply, Message: req.Op + " reply without a snapshot", Reply: line}
	}
	return w.circuit(), nil
}

func decode(line []byte, into any) error {
	if err := json.Unmarshal(line, into); err != nil {
		return &Error{Code: CodeBadReply, Message: "cannot decode cbd's reply: " + err.Error(), Reply: line, Err: err}
	}
	return nil
}

// Get returns the circuit (creating an unknown key as closed, counts 0).
func (c *Client) Get(ctx context.Context, key string) (Circuit, error) {
	if err := checkKey(key); err != nil {
		return Circuit{}, err
	}
	return c.circuitOp(ctx, &request{Op: "get", Key: key})
}

// Success counts a success (successCount += 1); it never changes the state.
func (c *Client) Success(ctx context.Context, key string) (Circuit, error) {
	if err := checkKey(key); err != nil {
		return Circuit{}, err
	}
	return c.circuitOp(ctx, &request{Op: "success", Key: key})
}

// Failure counts a failure (failureCount += 1, lastFailureTime = now); it
// never changes the state.
func (c *Client) Failure(ctx context.Context, key string) (Circuit, error) {
	if err := checkKey(key); err != nil {
		return Circuit{}, err
	}
	return c.circuitOp(ctx, &request{Op: "failure", Key: key})
}

// Condition makes a Transition conditional: when it does not hold nothing
// changes, and the error has Code "conflict" and carries the current circuit.
type Condition func(*request)

// IfState: only if the circuit is in state s.
func IfState(s State) Condition { return func(r *request) { r.Expect = s } }

// IfGeneration: only if the circuit is at generation g.
func IfGeneration(g int64) Condition { return func(r *request) { r.ExpectGeneration = &g } }

// Transition moves the circuit to state to: to closed zeroes both counts, to
// half-open zeroes successCount, to open keeps them.
func (c *Client) Transition(ctx context.Context, key string, to State, conditions ...Condition) (Circuit, error) {
	if err := checkKey(key); err != nil {
		return Circuit{}, err
	}
	if err := checkState(to, Closed, Open, HalfOpen); err != nil {
		return Circuit{}, err
	}
	req := &request{Op: "transition", Key: key, To: to}
	for _, cond := range conditions {
		cond(req)
	}
	if req.Expect != "" {
		if err := checkState(req.Expect, Closed, Open, HalfOpen); err != nil {
			return Circuit{}, err
		}
	}
	if req.ExpectGeneration != nil && (*req.ExpectGeneration < 0 || *req.ExpectGeneration > maxWireInt) {
		return Circuit{}, invalid("invalid_request", "expectGeneration %d is out of range", *req.ExpectGeneration)
	}
	return c.circuitOp(ctx, req)
}

// Reset removes the circuit; it reports whether there was one.
func (c *Client) Reset(ctx context.Context, key string) (bool, error) {
	if err := checkKey(key); err != nil {
		return false, err
	}
	line, err := c.roundTrip(ctx, &request{Op: "reset", Key: key})
	if err != nil {
		return false, err
	}
	var reply struct {
		Removed bool `json:"removed"`
	}
	err = decode(line, &reply)
	return reply.Removed, err
}

// Acquire asks whether a call may go ahead under the key's policy.
func (c *Client) Acquire(ctx context.Context, key string) (AcquireResult, error) {
	if err := checkKey(key); err != nil {
		return AcquireResult{}, err
	}
	line, err := c.roundTrip(ctx, &request{Op: "acquire", Key: key})
	if err != nil {
		return AcquireResult{}, err
	}
	var reply struct {
		wireCircuit
		Allowed      bool   `json:"allowed"`
		Permit       string `json:"permit"`
		RetryAfterMs int64  `json:"retryAfterMs"`
	}
	if err := decode(line, &reply); err != nil {
		return AcquireResult{}, err
	}
	return AcquireResult{Allowed: reply.Allowed, Permit: reply.Permit, RetryAfterMs: reply.RetryAfterMs, Circuit: reply.circuit()}, nil
}

// ReportOption adds what Acquire returned to a Report.
type ReportOption func(*request)

// WithGeneration: the generation Acquire returned; a report at another
// generation is stale and changes nothing.
func WithGeneration(g int64) ReportOption { return func(r *request) { r.Generation = &g } }

// WithPermit: the probe permit Acquire returned (needed in half-open).
func WithPermit(permit string) ReportOption { return func(r *request) { r.Permit = permit } }

// WithAcquired: both the generation and the permit of a.
func WithAcquired(a AcquireResult) ReportOption {
	return func(r *request) {
		g := a.Circuit.Generation
		r.Generation, r.Permit = &g, a.Permit
	}
}

// Report gives the outcome of an acquired call.
func (c *Client) Report(ctx context.Context, key string, outcome Outcome, opts ...ReportOption) (ReportResult, error) {
	if err := checkKey(key); err != nil {
		return ReportResult{}, err
	}
	if outcome != Success && outcome != Failure {
		return ReportResult{}, invalid("invalid_request", "outcome %q; expected success or failure", outcome)
	}
	req := &request{Op: "report", Key: key, Outcome: outcome}
	for _, o := range opts {
		o(req)
	}
	if len(req.Permit) > maxPermitBytes {
		return ReportResult{}, invalid("invalid_request", "a permit is at most %d bytes", maxPermitBytes)
	}
	if req.Generation != nil && (*req.Generation < 0 || *req.Generation > maxWireInt) {
		return ReportResult{}, invalid("invalid_request", "generation %d is out of range", *req.Generation)
	}
	line, err := c.roundTrip(ctx, req)
	if err != nil {
		return ReportResult{}, err
	}
	var reply struct {
		wireCircuit
		Stale bool `json:"stale"`
	}
	if err := decode(line, &reply); err != nil {
		return ReportResult{}, err
	}
	return ReportResult{Stale: reply.Stale, Circuit: reply.circuit()}, nil
}

// ForceOptions: how long a pin lasts (0: until Unforce) and why.
type ForceOptions struct {
	TTL    time.Duration
	Reason string
}

// Force pins the circuit open or closed.
func (c *Client) Force(ctx context.Context, key string, state State, opts ForceOptions) (Circuit, error) {
	if err := checkKey(key); err != nil {
		return Circuit{}, err
	}
	if err := checkState(state, Open, Closed); err != nil {
		return Circuit{}, err
	}
	if opts.TTL != 0 && (opts.TTL < time.Millisecond || opts.TTL > maxTTL) {
		return Circuit{}, invalid("invalid_request", "a pin's TTL is 1 ms to 366 days, not %v", opts.TTL)
	}
	if len(opts.Reason) > maxReasonBytes || hasControl(opts.Reason) {
		return Circuit{}, invalid("invalid_request", "a reason is at most %d bytes, without control characters", maxReasonBytes)
	}
	return c.circuitOp(ctx, &request{Op: "force", Key: key, State: state, TTLMs: opts.TTL.Milliseconds(), Reason: opts.Reason})
}

// Unforce lifts the pin; the state stays.
func (c *Client) Unforce(ctx context.Context, key string) (Circuit, error) {
	if err := checkKey(key); err != nil {
		return Circuit{}, err
	}
	return c.circuitOp(ctx, &request{Op: "unforce", Key: key})
}

// Configure sets the key's own policy values, by field name (FieldFailureThreshold, ...):
// a value sets the field, a nil value drops it from the override, and a nil
// map drops the whole override.
func (c *Client) Configure(ctx context.Context, key string, policy map[string]*int64) (PolicyInfo, error) {
	if err := checkKey(key); err != nil {
		return PolicyInfo{}, err
	}
	for field, v := range policy {
		switch field {
		case FieldFailureThreshold, FieldResetTimeoutMs, FieldHalfOpenMax, FieldSuccessThreshold, FieldProbeLeaseMs:
		default:
			return PolicyInfo{}, invalid("invalid_request", "unknown policy field %q", field)
		}
		if v != nil && (*v < 1 || *v > 1<<53) {
			return PolicyInfo{}, invalid("invalid_request", "policy %s is 1 to 2^53, not %d", field, *v)
		}
	}
	body := json.RawMessage("null")
	if policy != nil {
		var err error
		if body, err = json.Marshal(policy); err != nil {
			return PolicyInfo{}, err
		}
	}
	return c.policyOp(ctx, &request{Op: "configure", Key: key, Policy: body})
}

// Policy returns the key's effective policy and where each value comes from.
func (c *Client) Policy(ctx context.Context, key string) (PolicyInfo, error) {
	if err := checkKey(key); err != nil {
		return PolicyInfo{}, err
	}
	return c.policyOp(ctx, &request{Op: "policy", Key: key})
}

func (c *Client) policyOp(ctx context.Context, req *request) (PolicyInfo, error) {
	line, err := c.roundTrip(ctx, req)
	if err != nil {
		return PolicyInfo{}, err
	}
	var info PolicyInfo
	err = decode(line, &info)
	return info, err
}

// List returns one page of circuits in key order; pass Next back as After
// until it is nil (a page with a State filter may be short, even empty).
func (c *Client) List(ctx context.Context, opts ListOptions) (ListPage, error) {
	if len(opts.Prefix) > maxKeyBytes || len(opts.After) > maxKeyBytes {
		return ListPage{}, invalid("invalid_request", "prefix and after are at most %d bytes", maxKeyBytes)
	}
	if opts.Limit < 0 || opts.Limit > maxListLimit {
		return ListPage{}, invalid("invalid_request", "limit is 1 to %d, not %d", maxListLimit, opts.Limit)
	}
	if opts.State != "" {
		if err := checkState(opts.State, Closed, Open, HalfOpen); err != nil {
			return ListPage{}, err
		}
	}
	line, err := c.roundTrip(ctx, &request{Op: "list", Prefix: opts.Prefix, State: opts.State, Limit: opts.Limit, After: opts.After})
	if err != nil {
		return ListPage{}, err
	}
	var reply struct {
		Circuits []struct {
			wireCircuit
			Key string `json:"key"`
		} `json:"circuits"`
		Next *string `json:"next"`
	}
	if err := decode(line, &reply); err != nil {
		return ListPage{}, err
	}
	page := ListPage{Next: reply.Next, Circuits: make([]ListEntry, len(reply.Circuits))}
	for i, e := range reply.Circuits {
		page.Circuits[i] = ListEntry{Key: e.Key, Circuit: e.circuit()}
	}
	return page, nil
}

// Stats returns cbd's counters.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	line, err := c.roundTrip(ctx, &request{Op: "stats"})
	if err != nil {
		return Stats{}, err
	}
	var s Stats
	err = decode(line, &s)
	return s, err
}

// Metrics returns cbd's counters in the Prometheus text format; perCircuit
// adds per-circuit series.
func (c *Client) Metrics(ctx context.Context, perCircuit bool) (string, error) {
	line, err := c.roundTrip(ctx, &request{Op: "metrics", PerCircuit: perCircuit})
	if err != nil {
		return "", err
	}
	var reply struct {
		Text string `json:"text"`
	}
	err = decode(line, &reply)
	return reply.Text, err
}

// Ping returns cbd's version and protocol version.
func (c *Client) Ping(ctx context.Context) (PingResult, error) {
	line, err := c.roundTrip(ctx, &request{Op: "ping"})
	if err != nil {
		return PingResult{}, err
	}
	var p PingResult
	err = decode(line, &p)
	return p, err
}
