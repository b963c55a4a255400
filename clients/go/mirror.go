package cbd

// Mirror mode (issue #20): the breaker decides most calls in this process
// from a local copy of each circuit it uses, kept current by a key-set watch
// (protocol 9), and sends the outcomes to cbd in batches (reportBatch).
//
// What is decided where (the numbered rules of the shared design):
//
//  1. A key not covered by a confirmed watch, or whose entry has no state
//     yet, asks cbd (acquire) and joins the watch set. Only an acquire sent
//     after the covering watch was confirmed (the entry's drop count
//     unchanged since) may seed the entry: cbd then handled it after the
//     confirmation, so every later change arrives as an event.
//  2. Closed and unpinned, or pinned closed: allowed locally; the outcome is
//     queued with the entry's generation.
//  3. A deny time learned from cbd still ahead: denied locally.
//  4. Anything else asks cbd; a denial teaches the deny time, a permit (a
//     probe) is reported at once with report, not batched.
//  5. An event of the current watch with a newer generation replaces the
//     entry's state and clears its deny time; a reset event drops the state.
//
// Losing the watch (or an overflow) drops every entry's state until a new
// watch is confirmed; so does replacing the watch by one with another key set
// (events still unread on the old connection are not waited for), so each
// key's next call asks cbd once.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// MirrorOptions tune mirror mode; zero values take the defaults.
type MirrorOptions struct {
	// BatchSize is how many queued outcomes send a reportBatch at once
	// (default 100, at most 1000). A send takes everything queued, in lines
	// of at most 256 outcomes (fewer while cbd answers slowly) and 60 KiB,
	// two lines in flight at most.
	BatchSize int
	// BatchInterval is how long after the first queued outcome the queue is
	// sent when BatchSize is not reached (default 1 ms).
	BatchInterval time.Duration
	// IdleDrop is how long a key may go unused before its entry is dropped
	// (default 60 s; it goes within a quarter of that more); the key leaves
	// the watch at the next rebuild of the watch. Negative: never.
	IdleDrop time.Duration
	// QueueLimit bounds the outcomes queued and not yet sent (default
	// 10,000); past it the oldest are dropped and counted (MirrorStats).
	QueueLimit int
	// OnReportError, when set, is told of outcomes cbd did not record: once
	// per entry cbd answered with an error (key and *Error), and once per
	// batch that got no answer or a whole-line error (key ""). It runs on
	// the flusher's goroutine: it must not block.
	OnReportError func(key string, err error)
}

// WithMirror turns mirror mode on (protocol 9): Breaker.Execute decides calls
// on circuits it has seen from a local copy kept current by a watch, and
// reports their outcomes in batches. Flush sends what is queued; Close
// flushes first. Against an older cbd the watch is refused and every call
// asks cbd as without the option.
func WithMirror(mo MirrorOptions) Option {
	return func(o *options) { o.mirror = &mo }
}

// MirrorStats are the mirror's counters since the client was made.
type MirrorStats struct {
	// Keys is how many keys have an entry; Covered how many of them the
	// confirmed watch covers.
	Keys, Covered int
	// LocalAllowed and LocalDenied are calls decided without asking cbd;
	// Remote the calls that asked (acquire), Probes those that got a permit.
	LocalAllowed, LocalDenied, Remote, Probes int64
	// Queued outcomes (locally allowed, or allowed without a permit while
	// covered); Dropped were pushed out of a full queue (or came after
	// Close) and never sent.
	Queued, Dropped int64
	// Batches sent; of their outcomes cbd answered Applied, Stale (at an old
	// generation: they count nowhere) or Errors; Lost got no answer (the
	// connection failed, or a whole-line error).
	Batches, Applied, Stale, Errors, Lost int64
	// Watches confirmed, and watches lost (a closed connection or an overflow).
	Watches, WatchLosses int64
	// LineEntries is how many outcomes a reportBatch line holds now: 256,
	// fewer while cbd answers slowly.
	LineEntries int
}

// The mirror's bounds (besides QueueLimit).
const (
	// maxMirrorKeys: keys with an entry; a key-set watch holds at most 1000.
	maxMirrorKeys = maxWatchKeys
	// batchesInFlight reportBatch lines are sent and not yet answered at
	// once, each of at most lineEntries outcomes. More in flight only queues
	// at cbd: with --backend redis each entry is a Redis call (about 70 µs
	// here, 14k a second for all clients together), and 8 processes keeping
	// 512 to 1024 each in flight on a loaded machine made the last entries
	// wait past --backend-timeout (1 s): backend_unavailable. So lineEntries
	// adapts to how fast cbd answers (settle): halved, down to
	// minLineEntries, when a reply takes over slowReply, is lost or refuses
	// an entry with backend_unavailable; grown by minLineEntries, up to
	// maxLineEntries, when one takes under fastReply.
	batchesInFlight = 2
	maxLineEntries  = 256
	minLineEntries  = 16
	slowReply       = 50 * time.Millisecond
	fastReply       = 10 * time.Millisecond
	// watchLineSlack: the watch line's fixed part, besides the keys.
	watchLineSlack = 64
	// batchEntrySlack: an entry's bytes besides its key (outcome, generation).
	batchEntrySlack = 64
)

type mirror struct {
	c     *Client
	opts  MirrorOptions
	start time.Time // deny times are durations since then (monotonic)

	mu         sync.Mutex // guards the fields below it, taken before an entry's
	keys       map[string]*mirrorEntry
	watchBytes int        // the keys' share of a watch line
	current    *watchConn // the confirmed watch; nil while none
	dirty      bool       // an entry's key is not in current's set
	closed     bool

	rebuild  chan struct{} // cap 1: the watch should be rebuilt
	kick     chan struct{} // cap 1: the queue became non-empty or reached BatchSize
	flushNow chan struct{} // cap 1: Flush wants everything sent now
	stop     chan struct{}
	loops    sync.WaitGroup

	q    outcomeQueue
	bufs chan *outcomeBatch // batchesInFlight free batch buffers

	localDenied, remote, probes            atomic.Int64
	batches, applied, stale, refused, lost atomic.Int64
	watches, watchLosses                   atomic.Int64
}

// mirrorEntry is one key's local copy of its circuit.
type mirrorEntry struct {
	key     string
	keyJSON []byte // the key as a JSON string, for batch lines

	// allowGen is the generation a call is allowed locally at (rule 2), or
	// -1: read without the lock on every call. Written under mu.
	allowGen atomic.Int64
	// used is set by calls and cleared by the idle sweep.
	used atomic.Bool

	mu        sync.Mutex
	removed   bool // dropped from the mirror: look the key up again
	covered   bool // the confirmed watch's set holds the key
	seeded    bool // circuit is known
	circuit   Circuit
	denyUntil time.Duration // since mirror.start; 0: none learned
	// drops counts the times the state was dropped (watch lost or replaced,
	// reset event): an acquire sent before a drop must not seed.
	drops uint64

	lastUsed time.Duration // the idle sweep's; guarded by mirror.mu
}

// watchConn is one key-set watch connection.
type watchConn struct {
	nc   net.Conn
	r    *bufio.Reader
	keys map[string]struct{}
}

func newMirror(c *Client, mo MirrorOptions) *mirror {
	if mo.BatchSize <= 0 {
		mo.BatchSize = 100
	}
	if mo.BatchSize > maxReportBatch {
		mo.BatchSize = maxReportBatch
	}
	if mo.BatchInterval <= 0 {
		mo.BatchInterval = time.Millisecond
	}
	if mo.IdleDrop == 0 {
		mo.IdleDrop = 60 * time.Second
	}
	if mo.QueueLimit <= 0 {
		mo.QueueLimit = 10000
	}
	m := &mirror{
		c:        c,
		opts:     mo,
		start:    time.Now(),
		keys:     make(map[string]*mirrorEntry),
		rebuild:  make(chan struct{}, 1),
		kick:     make(chan struct{}, 1),
		flushNow: make(chan struct{}, 1),
		stop:     make(chan struct{}),
		bufs:     make(chan *outcomeBatch, batchesInFlight),
	}
	m.q.init(mo.QueueLimit)
	for i := 0; i < batchesInFlight; i++ {
		m.bufs <- &outcomeBatch{}
	}
	return m
}

// run starts the watch and flush loops (close stops them).
func (m *mirror) run() {
	m.loops.Add(2)
	go m.watchLoop()
	go m.flushLoop()
}

func (m *mirror) now() time.Duration { return time.Since(m.start) }

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// entry returns key's entry, making one (and asking for a watch that covers
// it) if there is none; nil when the key cannot be mirrored: invalid, over
// the mirror's bounds, or the client closed.
func (m *mirror) entry(key string) *mirrorEntry {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.keys[key]; e != nil {
		return e
	}
	// A key that is not UTF-8 goes on the wire with U+FFFD for its bad bytes
	// (encoding/json), so its events would name another string and never
	// reach the entry: such a key is not mirrored.
	if m.closed || checkKey(key) != nil || !utf8.ValidString(key) || len(m.keys) >= maxMirrorKeys {
		return nil
	}
	keyJSON, err := json.Marshal(key)
	if err != nil || m.watchBytes+len(keyJSON)+1 > maxRequestBytes-watchLineSlack {
		return nil
	}
	e := &mirrorEntry{key: key, keyJSON: keyJSON, lastUsed: m.now()}
	e.allowGen.Store(-1)
	m.keys[key] = e
	m.watchBytes += len(keyJSON) + 1
	if m.current != nil {
		if _, ok := m.current.keys[key]; ok {
			// The watch never stopped carrying the key (it was idle-dropped
			// and the watch not rebuilt since): covered at once.
			e.covered = true
			return e
		}
	}
	m.dirty = true
	signal(m.rebuild)
	return e
}

// refreshLocked recomputes allowGen from the entry (rule 2). e.mu held.
func (e *mirrorEntry) refreshLocked() {
	g := int64(-1)
	if e.covered && e.seeded && !e.removed {
		pin := e.circuit.Forced
		if (pin == nil && e.circuit.State == Closed) || (pin != nil && pin.State == Closed) {
			g = e.circuit.Generation
		}
	}
	e.allowGen.Store(g)
}

// dropLocked forgets the entry's state (the watch was lost or replaced, or a
// reset event came). e.mu held.
func (e *mirrorEntry) dropLocked() {
	e.seeded = false
	e.circuit = Circuit{}
	e.denyUntil = 0
	e.drops++
	e.refreshLocked()
}

// mirrorDecision is what the entry says about a call that rule 2 did not
// allow at once.
type mirrorDecision int

const (
	askCbd mirrorDecision = iota
	allowLocally
	denyLocally
	lookAgain // the entry was dropped from the mirror
)

// decide applies rules 2 and 3 under the entry's lock; for askCbd it also
// returns what learn needs to tell whether the reply may seed the entry.
func (e *mirrorEntry) decide(now time.Duration) (d mirrorDecision, gen int64, open *OpenError, covered bool, drops uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.removed {
		return lookAgain, 0, nil, false, 0
	}
	if g := e.allowGen.Load(); g >= 0 {
		return allowLocally, g, nil, false, 0
	}
	if e.covered && e.seeded && e.denyUntil > now {
		return denyLocally, 0, &OpenError{Key: e.key, RetryAfter: e.denyUntil - now, Circuit: e.circuit}, false, 0
	}
	return askCbd, 0, nil, e.covered, e.drops
}

// learn updates the entry from an acquire reply (rules 1 and 4): only when
// the acquire was sent with the key covered and nothing was dropped since,
// and only forward in generation.
func (m *mirror) learn(e *mirrorEntry, a AcquireResult, coveredAtSend bool, drops uint64) {
	if !coveredAtSend {
		return
	}
	now := m.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.removed || !e.covered || e.drops != drops {
		return
	}
	g := a.Circuit.Generation
	if e.seeded && g < e.circuit.Generation {
		return
	}
	if !e.seeded || g > e.circuit.Generation {
		e.denyUntil = 0
	}
	e.circuit = Circuit{Snapshot: a.Circuit.Snapshot, Generation: g, Forced: a.Circuit.Forced}
	e.seeded = true
	if !a.Allowed && a.RetryAfterMs > 0 {
		e.denyUntil = now + time.Duration(a.RetryAfterMs)*time.Millisecond
	}
	e.refreshLocked()
}

// ---- The watch ----

// watchLoop keeps a confirmed watch over the entries' keys: it rebuilds the
// watch when keys join or it was lost (with backoff after a failure), and
// sweeps idle entries.
func (m *mirror) watchLoop() {
	defer m.loops.Done()
	backoff := m.c.opts.minBackoff
	var retry *time.Timer
	var retryC <-chan time.Time
	var sweepC <-chan time.Time
	if m.opts.IdleDrop > 0 {
		every := m.opts.IdleDrop / 4
		if every < time.Millisecond {
			every = time.Millisecond
		}
		sweep := time.NewTicker(every)
		defer sweep.Stop()
		sweepC = sweep.C
	}
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	for {
		select {
		case <-m.stop:
			return
		case <-sweepC:
			m.sweepIdle()
			continue
		case <-m.rebuild:
			if retryC != nil {
				continue // in backoff: the retry timer rebuilds
			}
		case <-retryC:
			retryC = nil
		}
		err := m.rebuildWatch()
		if err == nil {
			backoff = m.c.opts.minBackoff
			continue
		}
		retry = time.NewTimer(backoff)
		retryC = retry.C
		backoff *= 2
		if backoff > m.c.opts.maxBackoff {
			backoff = m.c.opts.maxBackoff
		}
	}
}

// errUnsupported: cbd confirmed a watch, but not of the key set asked for
// (a cbd before protocol 9 ignores keys and watches everything).
var errUnsupported = errors.New("cbd does not watch key sets (protocol 9 needed)")

// rebuildWatch replaces the watch by one over every entry's key, if the set
// changed or there is none.
func (m *mirror) rebuildWatch() error {
	m.mu.Lock()
	if m.closed || (!m.dirty && (m.current != nil || len(m.keys) == 0)) {
		m.mu.Unlock()
		return nil
	}
	keys := make([]string, 0, len(m.keys))
	for k := range m.keys {
		keys = append(keys, k)
	}
	m.dirty = false
	m.mu.Unlock()
	if len(keys) == 0 {
		m.replaceWatch(nil)
		return nil
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-m.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	nc, r, reply, err := m.c.subscribe(ctx, WatchOptions{Keys: keys})
	if err == nil {
		var confirmed struct {
			Watching struct {
				Keys int `json:"keys"`
			} `json:"watching"`
		}
		if json.Unmarshal(reply, &confirmed) != nil || confirmed.Watching.Keys != len(keys) {
			nc.Close()
			err = &Error{Code: CodeBadReply, Message: errUnsupported.Error(), Reply: reply, Err: errUnsupported}
		}
	}
	if err != nil {
		m.mu.Lock()
		m.dirty = true
		m.mu.Unlock()
		return err
	}
	w := &watchConn{nc: nc, r: r, keys: make(map[string]struct{}, len(keys))}
	for _, k := range keys {
		w.keys[k] = struct{}{}
	}
	if !m.replaceWatch(w) {
		nc.Close()
		return nil
	}
	m.watches.Add(1)
	go m.readWatch(w)
	return nil
}

// replaceWatch makes w (nil: none) the confirmed watch and closes the one it
// replaces. Every entry's state is dropped: events the old connection had not
// delivered yet are not waited for, so only an acquire sent from now on, or
// an event of w, may seed an entry. False when the mirror is closed.
func (m *mirror) replaceWatch(w *watchConn) bool {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return false
	}
	old := m.current
	m.current = w
	for k, e := range m.keys {
		covered := false
		if w != nil {
			_, covered = w.keys[k]
		}
		if !covered {
			m.dirty = true
		}
		e.mu.Lock()
		e.covered = covered
		e.dropLocked()
		e.mu.Unlock()
	}
	if m.dirty {
		signal(m.rebuild) // keys joined while w was being confirmed
	}
	m.mu.Unlock()
	if old != nil {
		old.nc.Close()
	}
	return true
}

// readWatch applies w's events until the connection ends.
func (m *mirror) readWatch(w *watchConn) {
	for {
		line, err := readLine(w.r)
		if err != nil {
			m.watchLost(w)
			return
		}
		var ev Event
		if json.Unmarshal(line, &ev) != nil {
			m.watchLost(w)
			return
		}
		switch ev.Kind {
		case "transition", "reset":
			m.applyEvent(w, &ev)
		case "overflow":
			m.watchLost(w)
			return
		}
	}
}

// applyEvent is rule 5, for events of the current watch only (a replaced
// watch's late events are not trusted: see replaceWatch).
func (m *mirror) applyEvent(w *watchConn, ev *Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.current != w {
		return
	}
	e := m.keys[ev.Key]
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.covered {
		return
	}
	if ev.Kind == "reset" {
		e.dropLocked()
		return
	}
	if ev.Snapshot == nil || (e.seeded && ev.Generation <= e.circuit.Generation) {
		return
	}
	e.circuit = Circuit{Snapshot: *ev.Snapshot, Generation: ev.Generation, Forced: ev.Forced}
	e.seeded = true
	e.denyUntil = 0
	e.refreshLocked()
}

// watchLost: the current watch's connection ended (or overflowed); every
// entry's state goes until a new watch is confirmed.
func (m *mirror) watchLost(w *watchConn) {
	w.nc.Close()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.current != w || m.closed {
		return // replaced (and closed) on purpose
	}
	m.current = nil
	m.dirty = true
	for _, e := range m.keys {
		e.mu.Lock()
		e.covered = false
		e.dropLocked()
		e.mu.Unlock()
	}
	m.watchLosses.Add(1)
	signal(m.rebuild)
}

// sweepIdle drops the entries not used for IdleDrop. Their keys stay in the
// current watch (their events are ignored) until it is next rebuilt.
func (m *mirror) sweepIdle() {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, e := range m.keys {
		if e.used.Swap(false) {
			e.lastUsed = now
			continue
		}
		if now-e.lastUsed < m.opts.IdleDrop {
			continue
		}
		delete(m.keys, k)
		m.watchBytes -= len(e.keyJSON) + 1
		e.mu.Lock()
		e.removed = true
		e.covered = false
		e.dropLocked()
		e.mu.Unlock()
	}
}

// ---- The outcome queue and its flusher ----

// queuedOutcome is one outcome waiting for a batch.
type queuedOutcome struct {
	entry      *mirrorEntry
	generation int64
	failure    bool
}

// outcomeQueue is a ring of at most limit outcomes, and the batches taken
// from it and not yet answered, in the order they were sent. Outcomes are
// numbered as they are queued; "settled" is the number of the first one not
// yet answered (sent and answered, lost, or dropped all count as settled):
// Flush waits for it to pass what was queued when it was called.
type outcomeQueue struct {
	mu       sync.Mutex
	ring     []queuedOutcome
	head, n  int
	limit    int
	queued   uint64 // outcomes ever queued
	taken    uint64 // outcomes taken into batches or dropped
	inFlight []*outcomeBatch
	closed   bool
	// localAllowed and dropped are counted here, under the lock the queueing
	// takes anyway, rather than with atomics of their own.
	localAllowed, dropped int64
	// waiters: Flush calls waiting on settledCh, closed (and replaced) when
	// settled moves while someone waits.
	waiters   int
	settledCh chan struct{}
	// lastFailEnd/lastFailErr: the end (outcome number) and error of the
	// last settled batch that got no answer, for Flush to return.
	lastFailEnd uint64
	lastFailErr error
	// lineEntries: outcomes per line now (see maxLineEntries).
	lineEntries int
}

// outcomeBatch is one reportBatch line's outcomes; batchesInFlight of them
// are reused, so that taking a batch is also taking a slot in flight.
type outcomeBatch struct {
	items      []queuedOutcome
	start, end uint64 // outcome numbers
	line       []byte
	sentAt     time.Time
	done       bool
	err        error
}

func (q *outcomeQueue) init(limit int) {
	q.limit = limit
	size := 1024
	if size > limit {
		size = limit
	}
	q.ring = make([]queuedOutcome, size)
	q.settledCh = make(chan struct{})
	q.lineEntries = maxLineEntries
}

func (q *outcomeQueue) settledLocked() uint64 {
	if len(q.inFlight) > 0 {
		return q.inFlight[0].start
	}
	return q.taken
}

func (q *outcomeQueue) wakeLocked() {
	if q.waiters > 0 {
		close(q.settledCh)
		q.settledCh = make(chan struct{})
	}
}

// enqueue queues an outcome (the hot path of a locally allowed call).
func (m *mirror) enqueue(e *mirrorEntry, generation int64, failure, local bool) {
	q := &m.q
	q.mu.Lock()
	if local {
		q.localAllowed++
	}
	if q.closed {
		q.dropped++
		q.mu.Unlock()
		return
	}
	if q.n == len(q.ring) {
		if len(q.ring) < q.limit {
			size := 2 * len(q.ring)
			if size > q.limit {
				size = q.limit
			}
			ring := make([]queuedOutcome, size)
			copied := copy(ring, q.ring[q.head:])
			copy(ring[copied:], q.ring[:q.head])
			q.ring, q.head = ring, 0
		} else {
			// Full: the oldest outcome goes, counted.
			q.ring[q.head] = queuedOutcome{}
			if q.head++; q.head == len(q.ring) {
				q.head = 0
			}
			q.n--
			q.taken++
			q.dropped++
			if len(q.inFlight) == 0 {
				q.wakeLocked()
			}
		}
	}
	i := q.head + q.n
	if i >= len(q.ring) {
		i -= len(q.ring)
	}
	q.ring[i] = queuedOutcome{entry: e, generation: generation, failure: failure}
	q.n++
	q.queued++
	n := q.n
	q.mu.Unlock()
	if n == 1 || n == m.opts.BatchSize {
		signal(m.kick)
	}
}

func (q *outcomeQueue) length() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// flushLoop sends the queue when it reaches BatchSize, BatchInterval after
// its first outcome, or when Flush asks.
func (m *mirror) flushLoop() {
	defer m.loops.Done()
	timer := time.NewTimer(time.Hour)
	if !timer.Stop() {
		<-timer.C
	}
	for {
		select {
		case <-m.stop:
			return
		case <-m.flushNow:
		case <-m.kick:
			if m.q.length() < m.opts.BatchSize {
				timer.Reset(m.opts.BatchInterval)
			wait:
				for {
					select {
					case <-m.stop:
						timer.Stop()
						return
					case <-timer.C:
						break wait
					case <-m.flushNow:
						if !timer.Stop() {
							<-timer.C
						}
						break wait
					case <-m.kick:
						if m.q.length() >= m.opts.BatchSize {
							if !timer.Stop() {
								<-timer.C
							}
							break wait
						}
					}
				}
			}
		}
		m.sendQueued()
	}
}

// sendQueued sends everything queued, a line at a time, each waited for on a
// goroutine of its own (so that several are in flight).
func (m *mirror) sendQueued() {
	for {
		var b *outcomeBatch
		select {
		case b = <-m.bufs: // a slot in flight
		case <-m.stop:
			return
		}
		if !m.take(b) {
			m.bufs <- b
			return
		}
		id := m.c.ids.Add(1)
		b.line = encodeBatch(b.line[:0], id, b.items)
		m.batches.Add(1)
		b.sentAt = time.Now()
		s, err := m.c.sendLine(context.Background(), id, b.line)
		if err != nil {
			m.settle(b, nil, err)
			continue
		}
		go func() {
			reply, err := m.c.await(context.Background(), s)
			m.settle(b, reply, err)
		}()
	}
}

// take moves the queue's oldest outcomes into b: at most lineEntries, and
// no more than keep the line under maxRequestBytes. False when empty.
func (m *mirror) take(b *outcomeBatch) bool {
	q := &m.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 {
		return false
	}
	b.items = b.items[:0]
	size := 64 // the line's fixed part
	for q.n > 0 && len(b.items) < q.lineEntries {
		item := q.ring[q.head]
		size += len(item.entry.keyJSON) + batchEntrySlack
		if size > maxRequestBytes && len(b.items) > 0 {
			break
		}
		b.items = append(b.items, item)
		q.ring[q.head] = queuedOutcome{}
		if q.head++; q.head == len(q.ring) {
			q.head = 0
		}
		q.n--
	}
	b.start = q.taken
	q.taken += uint64(len(b.items))
	b.end = q.taken
	b.done, b.err = false, nil
	q.inFlight = append(q.inFlight, b)
	return true
}

// encodeBatch appends the reportBatch line of items (with its newline).
func encodeBatch(line []byte, id uint64, items []queuedOutcome) []byte {
	line = append(line, `{"op":"reportBatch","id":`...)
	line = strconv.AppendUint(line, id, 10)
	line = append(line, `,"reports":[`...)
	for i, item := range items {
		if i > 0 {
			line = append(line, ',')
		}
		line = append(line, `{"key":`...)
		line = append(line, item.entry.keyJSON...)
		if item.failure {
			line = append(line, `,"outcome":"failure","generation":`...)
		} else {
			line = append(line, `,"outcome":"success","generation":`...)
		}
		line = strconv.AppendInt(line, item.generation, 10)
		line = append(line, '}')
	}
	return append(line, "]}\n"...)
}

// settle takes in a batch's answer: counts, the error callback, and the
// settled number Flush waits on; then the batch's buffer is free again.
func (m *mirror) settle(b *outcomeBatch, reply []byte, err error) {
	var result struct {
		Applied int64 `json:"applied"`
		Stale   int64 `json:"stale"`
		Errors  []struct {
			Index   int    `json:"index"`
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err == nil {
		if e := json.Unmarshal(reply, &result); e != nil {
			err = &Error{Code: CodeBadReply, Message: "cannot decode cbd's reportBatch reply: " + e.Error(), Reply: reply, Err: e}
		}
	}
	took := time.Since(b.sentAt)
	congested := err != nil || took > slowReply
	report := m.opts.OnReportError
	if err != nil {
		m.lost.Add(int64(len(b.items)))
		if report != nil {
			report("", fmt.Errorf("cbd: a batch of %d outcomes was not recorded: %w", len(b.items), err))
		}
	} else {
		m.applied.Add(result.Applied)
		m.stale.Add(result.Stale)
		m.refused.Add(int64(len(result.Errors)))
		for _, e := range result.Errors {
			congested = congested || e.Code == "backend_unavailable"
		}
		if report != nil {
			for _, e := range result.Errors {
				key := ""
				if e.Index >= 0 && e.Index < len(b.items) {
					key = b.items[e.Index].entry.key
				}
				report(key, &Error{Code: e.Code, Message: e.Message, Reply: reply})
			}
		}
	}
	for i := range b.items {
		b.items[i] = queuedOutcome{} // let dropped entries go
	}
	q := &m.q
	q.mu.Lock()
	switch {
	case congested:
		if q.lineEntries /= 2; q.lineEntries < minLineEntries {
			q.lineEntries = minLineEntries
		}
	case took < fastReply && q.lineEntries < maxLineEntries:
		q.lineEntries += minLineEntries
	}
	b.done, b.err = true, err
	for len(q.inFlight) > 0 && q.inFlight[0].done {
		front := q.inFlight[0]
		if front.err != nil {
			q.lastFailEnd, q.lastFailErr = front.end, front.err
		}
		q.inFlight[0] = nil
		q.inFlight = q.inFlight[1:]
	}
	q.wakeLocked()
	q.mu.Unlock()
	m.bufs <- b
}

// flush sends everything queued and waits until cbd has answered it.
func (m *mirror) flush(ctx context.Context) error {
	q := &m.q
	q.mu.Lock()
	target, from := q.queued, q.settledLocked()
	q.waiters++
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		q.waiters--
		q.mu.Unlock()
	}()
	signal(m.flushNow)
	for {
		q.mu.Lock()
		if settled := q.settledLocked(); settled >= target {
			err := q.lastFailErr
			failed := q.lastFailEnd > from
			q.mu.Unlock()
			if failed {
				return fmt.Errorf("cbd: flush: outcomes were not recorded: %w", err)
			}
			return nil
		}
		ch := q.settledCh
		q.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// close: no more local decisions, flush, stop the loops and the watch.
func (m *mirror) close(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	for k, e := range m.keys {
		delete(m.keys, k)
		e.mu.Lock()
		e.removed = true
		e.covered = false
		e.dropLocked()
		e.mu.Unlock()
	}
	w := m.current
	m.current = nil
	m.mu.Unlock()
	if w != nil {
		w.nc.Close()
	}
	err := m.flush(ctx)
	m.q.mu.Lock()
	m.q.closed = true
	m.q.mu.Unlock()
	close(m.stop)
	m.loops.Wait()
	return err
}

func (m *mirror) stats() MirrorStats {
	s := MirrorStats{
		LocalDenied: m.localDenied.Load(), Remote: m.remote.Load(), Probes: m.probes.Load(),
		Batches: m.batches.Load(), Applied: m.applied.Load(), Stale: m.stale.Load(),
		Errors: m.refused.Load(), Lost: m.lost.Load(),
		Watches: m.watches.Load(), WatchLosses: m.watchLosses.Load(),
	}
	m.mu.Lock()
	s.Keys = len(m.keys)
	for _, e := range m.keys {
		e.mu.Lock()
		if e.covered {
			s.Covered++
		}
		e.mu.Unlock()
	}
	m.mu.Unlock()
	m.q.mu.Lock()
	s.LocalAllowed, s.Dropped, s.Queued = m.q.localAllowed, m.q.dropped, int64(m.q.queued)
	s.LineEntries = m.q.lineEntries
	m.q.mu.Unlock()
	return s
}

// MirrorStats returns the mirror's counters (zero without WithMirror).
func (c *Client) MirrorStats() MirrorStats {
	if c.mirror == nil {
		return MirrorStats{}
	}
	return c.mirror.stats()
}

// Flush sends every outcome the mirror has queued and returns once cbd has
// answered them (at once without WithMirror). Its error says a batch got no
// answer (cbd unavailable, the connection lost): its outcomes may or may not
// have been recorded. Outcomes cbd refused one by one are not Flush's error:
// see MirrorOptions.OnReportError and MirrorStats.
func (c *Client) Flush(ctx context.Context) error {
	if c.mirror == nil {
		return nil
	}
	return c.mirror.flush(ctx)
}
