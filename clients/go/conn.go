package cbd

// The pipelined connection under a Client: requests are written in order
// under one mutex and their waiters queued in that same order; one waiter at
// a time reads reply lines and hands each to the waiter at the front.
// cbd answers in request order on a connection, so position is the match; the
// id every request carries is checked against the reply's, and a reply
// without one (a parse_error cbd could not read an id from) is still matched.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// maxReplyBytes bounds one reply line. The largest cbd sends is a list or
// export page of 10,000 circuits (a few MiB); a longer line means the peer is
// not cbd, and the connection is dropped rather than buffered without end.
const maxReplyBytes = 16 << 20

// Option changes a Client's defaults (Dial, NewClient).
type Option func(*options)

type options struct {
	timeout    time.Duration
	minBackoff time.Duration
	maxBackoff time.Duration
	mirror     *MirrorOptions // nil: mirror mode off
}

// WithTimeout sets how long a request waits for its reply when its context
// has no earlier deadline (default 5 s). A request that times out marks the
// connection down: a cbd that does not answer is treated as not there.
func WithTimeout(d time.Duration) Option {
	return func(o *options) { o.timeout = d }
}

// WithBackoff sets how long calls fail fast with ErrUnavailable after a
// failed connect before the next call tries again: first min, doubling up to
// max (defaults 50 ms and 2 s).
func WithBackoff(min, max time.Duration) Option {
	return func(o *options) { o.minBackoff, o.maxBackoff = min, max }
}

// Client is a connection to cbd, safe for concurrent use by many goroutines.
type Client struct {
	path   string
	opts   options
	ids    atomic.Uint64
	mirror *mirror // nil unless WithMirror

	mu        sync.Mutex
	conn      *pipe // nil while not connected
	closed    bool
	dialing   chan struct{} // closed when the dial in progress ends; nil when none
	downUntil time.Time     // calls fail fast until then
	downCause error
	backoff   time.Duration
}

// pipe is one connection and the waiters of its unanswered requests, in the
// order they were written. Guarded by Client.mu.
type pipe struct {
	nc      net.Conn
	waiting []*waiter
	dead    bool
	// readTurn holds one token: the waiter that takes it reads replies for
	// every waiter until its own comes, then puts it back. There is no reader
	// goroutine. Not guarded by mu.
	readTurn chan struct{}
	in       lineBuffer // touched only with the read turn
}

type waiter struct {
	id   uint64
	done chan answer // buffered: the reader never blocks on a waiter that left
}

// answer is a reply line, or why there is none.
type answer struct {
	line []byte
	err  error
}

// replyHead is what the reader reads of every reply: enough to match it and
// to tell an error from a success.
type replyHead struct {
	ID    *uint64 `json:"id"`
	OK    bool    `json:"ok"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// NewClient returns a client for the socket at path ("" follows the
// socket-path rule, see SocketPath) without connecting: the first call
// connects. Use it where cbd may start after the caller.
func NewClient(path string, opts ...Option) *Client {
	c := &Client{
		path: SocketPath(path),
		opts: options{timeout: 5 * time.Second, minBackoff: 50 * time.Millisecond, maxBackoff: 2 * time.Second},
	}
	for _, o := range opts {
		o(&c.opts)
	}
	if c.opts.timeout <= 0 {
		c.opts.timeout = 5 * time.Second
	}
	if c.opts.minBackoff <= 0 {
		c.opts.minBackoff = time.Millisecond
	}
	if c.opts.maxBackoff < c.opts.minBackoff {
		c.opts.maxBackoff = c.opts.minBackoff
	}
	c.backoff = c.opts.minBackoff
	if c.opts.mirror != nil {
		c.mirror = newMirror(c, *c.opts.mirror)
		c.mirror.run()
	}
	return c
}

// Dial connects to cbd at path ("" follows the socket-path rule). It fails
// (with an error matching ErrUnavailable, at once) when nothing listens
// there; NewClient is the form that connects on first use instead.
func Dial(ctx context.Context, path string, opts ...Option) (*Client, error) {
	c := NewClient(path, opts...)
	c.mu.Lock()
	_, err := c.connectLocked(ctx)
	c.mu.Unlock()
	if err != nil {
		c.Close() // the mirror's goroutines
		return nil, err
	}
	return c, nil
}

// Path is the socket the client connects to.
func (c *Client) Path() string { return c.path }

// Close closes the connection; waiting calls and later ones fail with an
// error matching ErrClosed. With WithMirror it first sends the queued
// outcomes and waits for cbd's answer (within the client's timeout): its
// error is then Flush's.
func (c *Client) Close() error {
	var flushErr error
	if c.mirror != nil {
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.timeout)
		flushErr = c.mirror.close(ctx)
		cancel()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if c.conn != nil {
		c.dropLocked(c.conn, clientError(CodeClosed, "the client was closed", nil))
	}
	return flushErr
}

// connectLocked returns the connection, dialing if there is none. Called and
// returns with c.mu held; it lets go of it while dialing, and callers that
// arrive meanwhile wait for that dial instead of starting their own.
func (c *Client) connectLocked(ctx context.Context) (*pipe, error) {
	for c.conn == nil {
		if c.closed {
			return nil, clientError(CodeClosed, "the client was closed", nil)
		}
		if time.Now().Before(c.downUntil) {
			return nil, clientError(CodeUnavailable,
				fmt.Sprintf("cbd at %s is down (%v); next try in %v", c.path, c.downCause, time.Until(c.downUntil).Round(time.Millisecond)),
				c.downCause)
		}
		if c.dialing != nil {
			dialing := c.dialing
			c.mu.Unlock()
			select {
			case <-dialing:
			case <-ctx.Done():
				c.mu.Lock()
				return nil, ctx.Err()
			}
			c.mu.Lock()
			continue
		}
		dialing := make(chan struct{})
		c.dialing = dialing
		c.mu.Unlock()
		dialCtx, cancel := context.WithTimeout(ctx, c.opts.timeout)
		var dialer net.Dialer
		nc, err := dialer.DialContext(dialCtx, "unix", c.path)
		cancel()
		c.mu.Lock()
		c.dialing = nil
		close(dialing)
		if err != nil {
			if ctx.Err() != nil {
				// The caller gave up; that says nothing about cbd.
				return nil, ctx.Err()
			}
			c.markDownLocked(err)
			return nil, clientError(CodeUnavailable, fmt.Sprintf("cannot connect to cbd at %s: %v", c.path, err), err)
		}
		if c.closed {
			nc.Close()
			continue
		}
		c.backoff = c.opts.minBackoff
		c.downCause = nil
		c.conn = &pipe{nc: nc, readTurn: make(chan struct{}, 1)}
		c.conn.readTurn <- struct{}{}
	}
	return c.conn, nil
}

// dropLocked closes p and fails every request waiting on it with err.
func (c *Client) dropLocked(p *pipe, err error) {
	if p.dead {
		return
	}
	p.dead = true
	p.nc.Close()
	for _, w := range p.waiting {
		w.done <- answer{err: err}
	}
	p.waiting = nil
	if c.conn == p {
		c.conn = nil
	}
}

// markDownLocked makes calls fail fast for the current backoff.
func (c *Client) markDownLocked(cause error) {
	c.downUntil = time.Now().Add(c.backoff)
	c.downCause = cause
	c.backoff *= 2
	if c.backoff > c.opts.maxBackoff {
		c.backoff = c.opts.maxBackoff
	}
}

// roundTrip sends one request and returns its reply line (cbd's error replies
// as *Error). The request's id is set here.
func (c *Client) roundTrip(ctx context.Context, req *request) ([]byte, error) {
	req.ID = c.ids.Add(1)
	line, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("cbd: encoding %s: %w", req.Op, err)
	}
	return c.roundTripLine(ctx, req.ID, append(line, '\n'))
}

func (c *Client) roundTripLine(ctx context.Context, id uint64, line []byte) ([]byte, error) {
	s, err := c.sendLine(ctx, id, line)
	if err != nil {
		return nil, err
	}
	return c.await(ctx, s)
}

// sent is a request written to the connection and not yet answered: what
// await needs to wait for its reply.
type sent struct {
	p           *pipe
	w           *waiter
	deadline    time.Time
	ownDeadline bool
}

// sendLine writes one request line (connecting if need be) and queues its
// waiter; await then waits for the reply. The two halves let the mirror's
// flusher put a batch on the wire in order and wait for it elsewhere.
func (c *Client) sendLine(ctx context.Context, id uint64, line []byte) (sent, error) {
	if err := ctx.Err(); err != nil {
		return sent{}, err
	}
	// The client's own timeout applies unless the caller's deadline is sooner.
	deadline := time.Now().Add(c.opts.timeout)
	ownDeadline := true
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline, ownDeadline = d, false
	}

	w := &waiter{id: id, done: make(chan answer, 1)}
	c.mu.Lock()
	p, err := c.connectLocked(ctx)
	if err != nil {
		c.mu.Unlock()
		return sent{}, err
	}
	p.waiting = append(p.waiting, w)
	// Writes are under the mutex so that the wire order is the queue order.
	// cbd reads as long as replies are read, so a write blocks only on a cbd
	// that has stopped: the deadline bounds that.
	_ = p.nc.SetWriteDeadline(deadline)
	if _, err := p.nc.Write(line); err != nil {
		c.dropLocked(p, clientError(CodeConnectionLost,
			fmt.Sprintf("lost the connection to cbd at %s while sending; the request may or may not have been applied", c.path), err))
	}
	c.mu.Unlock()
	return sent{p: p, w: w, deadline: deadline, ownDeadline: ownDeadline}, nil
}

// await waits for the reply to a request sendLine wrote.
func (c *Client) await(ctx context.Context, s sent) ([]byte, error) {
	p, w, deadline, ownDeadline := s.p, s.w, s.deadline, s.ownDeadline
	// Most often the read turn is free (a lone caller): take it without
	// arming a timer, which the read's own deadline makes needless.
	select {
	case <-p.readTurn:
		a := c.readReplies(ctx, p, w, deadline, ownDeadline)
		p.readTurn <- struct{}{}
		return a.line, a.err
	default:
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case a := <-w.done:
		return a.line, a.err
	case <-p.readTurn:
		a := c.readReplies(ctx, p, w, deadline, ownDeadline)
		p.readTurn <- struct{}{}
		return a.line, a.err
	case <-ctx.Done():
		// The reply may still come: it stays queued so that later replies
		// keep their positions, and whoever reads it drops it.
		return nil, ctx.Err()
	case <-timer.C:
		return nil, c.timedOut(p, ownDeadline)
	}
}

// timedOut is the error of a request whose deadline passed. The caller's
// deadline is the caller's affair; the client's own means cbd did not
// answer in time, and a cbd that does not answer is treated as down, so that
// the calls after this one fail fast instead of each waiting as long.
func (c *Client) timedOut(p *pipe, ownDeadline bool) error {
	if !ownDeadline {
		return context.DeadlineExceeded
	}
	err := clientError(CodeTimeout, fmt.Sprintf("no reply from cbd at %s within %v", c.path, c.opts.timeout), nil)
	c.mu.Lock()
	if !p.dead {
		c.markDownLocked(err)
		c.dropLocked(p, err)
	}
	c.mu.Unlock()
	return err
}

// readReplies is the read turn of waiter w: it reads reply lines and hands
// each to the request at the front of the queue, until w's own comes. The
// goroutine that waits reads for itself, so a lone caller's reply is not
// passed between goroutines (half the latency of a reader goroutine).
func (c *Client) readReplies(ctx context.Context, p *pipe, w *waiter, deadline time.Time, ownDeadline bool) answer {
	select {
	case a := <-w.done: // answered by the previous reader
		return a
	default:
	}
	// A read in progress ends at its deadline; a cancelled context ends it by
	// moving the deadline to now.
	if done := ctx.Done(); done != nil {
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			select {
			case <-done:
				_ = p.nc.SetReadDeadline(time.Now())
			case <-stop:
			}
		}()
	}
	_ = p.nc.SetReadDeadline(deadline)
	for {
		line, err := p.in.next(p.nc)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if ctx.Err() != nil {
					return answer{err: ctx.Err()}
				}
				if time.Now().Before(deadline) {
					// Moved by an earlier reader's cancelled context: not ours.
					_ = p.nc.SetReadDeadline(deadline)
					continue
				}
				return answer{err: c.timedOut(p, ownDeadline)}
			}
			c.mu.Lock()
			c.dropLocked(p, clientError(CodeConnectionLost,
				fmt.Sprintf("lost the connection to cbd at %s; a request sent may or may not have been applied", c.path), err))
			c.mu.Unlock()
			return <-w.done
		}
		to, a := c.dispatch(p, line)
		if to == nil { // p was dropped, w's answer with it
			return <-w.done
		}
		if to == w {
			return a
		}
		to.done <- a
	}
}

// dispatch pops the request that line answers and makes its answer; nil
// when the line cannot be matched and the connection was dropped for it.
func (c *Client) dispatch(p *pipe, line []byte) (*waiter, answer) {
	head, headErr := parseHead(line)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case p.dead:
		return nil, answer{}
	case headErr != nil:
		c.dropLocked(p, clientError(CodeBadReply, fmt.Sprintf("the peer at %s sent a line that is not JSON", c.path), headErr))
		return nil, answer{}
	case head.ID == nil && !head.OK && head.Error != nil && head.Error.Code == "too_many_connections":
		// Sent in place of any reply, then cbd closes: nothing was applied.
		e := &Error{Code: head.Error.Code, Message: head.Error.Message, Reply: line}
		c.markDownLocked(e)
		c.dropLocked(p, e)
		return nil, answer{}
	case len(p.waiting) == 0 || (head.ID != nil && *head.ID != p.waiting[0].id):
		c.dropLocked(p, clientError(CodeBadReply, fmt.Sprintf("the peer at %s answered out of order", c.path), nil))
		return nil, answer{}
	}
	w := p.waiting[0]
	p.waiting[0] = nil
	p.waiting = p.waiting[1:]
	if head.OK {
		return w, answer{line: line}
	}
	e := &Error{Code: CodeBadReply, Message: "an error reply without an error", Reply: line}
	if head.Error != nil {
		e.Code, e.Message = head.Error.Code, head.Error.Message
	}
	return w, answer{err: e}
}

// successPrefix is how cbd begins a success reply to a request with an
// integer id: {"id":N,"ok":true — read without a JSON decoder, since every
// reply passes here. Anything else goes through encoding/json.
var (
	idPrefix = []byte(`{"id":`)
	okTrue   = []byte(`,"ok":true`)
)

func parseHead(line []byte) (replyHead, error) {
	if bytes.HasPrefix(line, idPrefix) {
		rest := line[len(idPrefix):]
		digits := 0
		for digits < len(rest) && digits < 20 && rest[digits] >= '0' && rest[digits] <= '9' {
			digits++
		}
		if digits > 0 && bytes.HasPrefix(rest[digits:], okTrue) {
			if id, err := strconv.ParseUint(string(rest[:digits]), 10, 64); err == nil {
				return replyHead{ID: &id, OK: true}, nil
			}
		}
	}
	var head replyHead
	err := json.Unmarshal(line, &head)
	return head, err
}

// lineBuffer holds the bytes read from a connection and not yet handed out
// as lines. Only the goroutine with the read turn touches it; what a read cut
// short by a deadline got stays for the next turn.
type lineBuffer struct {
	buf     []byte
	start   int // the next line starts here
	scanned int // no newline in buf[start:scanned]
}

// next returns the next line (without its newline, in a slice of its own),
// reading from r as needed; a line is at most maxReplyBytes.
func (b *lineBuffer) next(r io.Reader) ([]byte, error) {
	for {
		if i := bytes.IndexByte(b.buf[b.scanned:], '\n'); i >= 0 {
			end := b.scanned + i
			line := append([]byte(nil), b.buf[b.start:end]...)
			b.start, b.scanned = end+1, end+1
			return line, nil
		}
		b.scanned = len(b.buf)
		if len(b.buf)-b.start > maxReplyBytes {
			return nil, fmt.Errorf("a reply line longer than %d bytes", maxReplyBytes)
		}
		if b.start > 0 {
			n := copy(b.buf, b.buf[b.start:])
			b.buf, b.scanned, b.start = b.buf[:n], b.scanned-b.start, 0
		}
		if len(b.buf) == cap(b.buf) {
			grown := make([]byte, len(b.buf), 2*cap(b.buf)+64<<10)
			copy(grown, b.buf)
			b.buf = grown
		}
		n, err := r.Read(b.buf[len(b.buf):cap(b.buf)])
		b.buf = b.buf[:len(b.buf)+n]
		if n == 0 && err != nil {
			return nil, err
		}
	}
}

// readLine reads one line (without its newline) of at most maxReplyBytes,
// into a buffer of its own: the watch stream's reader.
func readLine(r *bufio.Reader) ([]byte, error) {
	chunk, err := r.ReadSlice('\n')
	if err == nil {
		return append([]byte(nil), chunk[:len(chunk)-1]...), nil
	}
	line := append([]byte(nil), chunk...)
	for errors.Is(err, bufio.ErrBufferFull) {
		if len(line) > maxReplyBytes {
			return nil, fmt.Errorf("a line longer than %d bytes", maxReplyBytes)
		}
		chunk, err = r.ReadSlice('\n')
		line = append(line, chunk...)
	}
	if err != nil {
		return nil, err
	}
	return line[:len(line)-1], nil
}
