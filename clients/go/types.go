package cbd

// The wire's replies as Go types. Times are epoch milliseconds as on the
// wire (the reference store's Date.now() values), so that a Snapshot compares
// field for field with what every other client sees.

// State is a circuit's state.
type State string

const (
	Closed   State = "closed"
	Open     State = "open"
	HalfOpen State = "half-open"
)

// Outcome is what Report says about an acquired call.
type Outcome string

const (
	Success Outcome = "success"
	Failure Outcome = "failure"
)

// Snapshot is the reference store's snapshot, field for field.
type Snapshot struct {
	State        State `json:"state"`
	FailureCount int64 `json:"failureCount"`
	SuccessCount int64 `json:"successCount"`
	// LastFailureTime is epoch ms of the last failure; 0 if none.
	LastFailureTime int64 `json:"lastFailureTime"`
	// LastStateChange is epoch ms of the last transition, or of creation.
	LastStateChange int64 `json:"lastStateChange"`
}

// Circuit is a snapshot with what cbd says beside it.
type Circuit struct {
	Snapshot
	// Generation changes with every change of state, pin and lifted pin, and
	// is never reused; pass it to Report and to IfGeneration.
	Generation int64
	// Forced is the pin, when the circuit is pinned.
	Forced *ForcePin
	// Transition is the change of state this operation made, if it made one.
	Transition *Transition
}

// ForcePin is a pin set by Force.
type ForcePin struct {
	State State `json:"state"`
	// Until is epoch ms when the pin lifts; nil for a pin without TTL.
	Until  *int64 `json:"until"`
	Reason string `json:"reason"`
	By     struct {
		UID int64 `json:"uid"`
		PID int64 `json:"pid"`
	} `json:"by"`
}

// Transition is a change of state and its cause (manual, threshold, timeout,
// probe-success, probe-failure, lease-expired, force, unforce, force-expired).
type Transition struct {
	From  State  `json:"from"`
	To    State  `json:"to"`
	Cause string `json:"cause"`
}

// wireCircuit is the circuit as it sits in a reply: the snapshot nested.
// Circuit has no UnmarshalJSON of its own on purpose: embedded in a reply
// struct, its method would take over decoding of the whole reply.
type wireCircuit struct {
	Snapshot   *Snapshot   `json:"snapshot"`
	Generation int64       `json:"generation"`
	Forced     *ForcePin   `json:"forced"`
	Transition *Transition `json:"transition"`
}

func (w wireCircuit) circuit() Circuit {
	c := Circuit{Generation: w.Generation, Forced: w.Forced, Transition: w.Transition}
	if w.Snapshot != nil {
		c.Snapshot = *w.Snapshot
	}
	return c
}

// AcquireResult is acquire's answer.
type AcquireResult struct {
	Allowed bool
	// Permit is the probe permit in half-open ("" otherwise): Report needs it.
	Permit string
	// RetryAfterMs is set when denied: how long until a call may be allowed.
	RetryAfterMs int64
	Circuit      Circuit
}

// ReportResult is report's answer.
type ReportResult struct {
	// Stale: the report's generation was not the circuit's, so nothing changed.
	Stale   bool
	Circuit Circuit
}

// Policy is a key's effective policy.
type Policy struct {
	FailureThreshold int64 `json:"failureThreshold"`
	ResetTimeoutMs   int64 `json:"resetTimeoutMs"`
	HalfOpenMax      int64 `json:"halfOpenMax"`
	SuccessThreshold int64 `json:"successThreshold"`
	ProbeLeaseMs     int64 `json:"probeLeaseMs"`
}

// Policy field names, for Configure.
const (
	FieldFailureThreshold = "failureThreshold"
	FieldResetTimeoutMs   = "resetTimeoutMs"
	FieldHalfOpenMax      = "halfOpenMax"
	FieldSuccessThreshold = "successThreshold"
	FieldProbeLeaseMs     = "probeLeaseMs"
)

// PolicyInfo is the answer of Policy and Configure.
type PolicyInfo struct {
	Key    string `json:"key"`
	Policy Policy `json:"policy"`
	// Source says, per field name, where the value came from: key, prefix
	// or default.
	Source map[string]string `json:"source"`
	// Prefix is the matching prefix rule, if any.
	Prefix *string `json:"prefix"`
}

// ListOptions filter and page List; zero values mean "not given".
type ListOptions struct {
	Prefix string
	State  State
	// Limit is circuits per page, 1..10000 (0: cbd's default, 1000).
	Limit int
	// After starts the page after this key (the previous page's Next).
	After string
}

// ListEntry is one circuit of a List page.
type ListEntry struct {
	Key     string
	Circuit Circuit
}

// ListPage is one page of List.
type ListPage struct {
	Circuits []ListEntry
	// Next is the key to pass as After for the next page; nil after the last.
	Next *string
}

// Stats is cbd's counters (docs/PROTOCOL.md, Stats).
type Stats struct {
	Version     string `json:"version"`
	Protocol    int    `json:"protocol"`
	UptimeMs    int64  `json:"uptimeMs"`
	Connections struct {
		Current int64 `json:"current"`
		Total   int64 `json:"total"`
		Refused int64 `json:"refused"`
	} `json:"connections"`
	Requests map[string]int64 `json:"requests"`
	Errors   map[string]int64 `json:"errors"`
	// Circuits is nil with the Redis backend before its first sweep.
	Circuits *struct {
		Total    int64 `json:"total"`
		Closed   int64 `json:"closed"`
		Open     int64 `json:"open"`
		HalfOpen int64 `json:"halfOpen"`
		Forced   int64 `json:"forced"`
	} `json:"circuits"`
	Watchers int64 `json:"watchers"`
	Events   struct {
		Emitted int64 `json:"emitted"`
		Dropped int64 `json:"dropped"`
	} `json:"events"`
	ResidentMemoryBytes int64 `json:"residentMemoryBytes"`
	// Storage is nil without --state-file.
	Storage *struct {
		Mode         string  `json:"mode"`
		Path         string  `json:"path"`
		Healthy      bool    `json:"healthy"`
		Commits      int64   `json:"commits"`
		Failures     int64   `json:"failures"`
		Written      int64   `json:"written"`
		Undone       int64   `json:"undone"`
		Pending      int64   `json:"pending"`
		LastCommitMs int64   `json:"lastCommitMs"`
		LastError    *string `json:"lastError"`
	} `json:"storage"`
	// Backend is nil with the memory backend.
	Backend *struct {
		Kind        string  `json:"kind"`
		Address     string  `json:"address"`
		Up          bool    `json:"up"`
		Disconnects int64   `json:"disconnects"`
		Unavailable int64   `json:"unavailable"`
		LastError   *string `json:"lastError"`
	} `json:"backend"`
}

// PingResult is ping's answer.
type PingResult struct {
	Version  string `json:"version"`
	Protocol int    `json:"protocol"`
}

// Event is one line of a watch: Kind is "transition" (From, To, Cause,
// Generation, Snapshot, Forced when pinned), "reset", or "overflow"
// (Dropped; the stream ends after it).
type Event struct {
	Kind       string    `json:"event"`
	Key        string    `json:"key"`
	From       State     `json:"from"`
	To         State     `json:"to"`
	At         int64     `json:"at"`
	Cause      string    `json:"cause"`
	Generation int64     `json:"generation"`
	Snapshot   *Snapshot `json:"snapshot"`
	Forced     *ForcePin `json:"forced"`
	Dropped    int64     `json:"dropped"`
}

// WatchOptions choose what to watch: one Key, or keys starting with Prefix,
// or a set of Keys (1 to 1000, protocol 9), or (all empty) every circuit.
type WatchOptions struct {
	Key    string
	Prefix string
	Keys   []string
}
