package cbd

// Watch: an event stream on a connection of its own (a watching connection
// carries nothing else), ended by the caller's context.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"time"
)

// watchBuffer is how many events wait in the channel for a slow reader; past
// that, cbd queues them (up to its --watch-queue, then overflow).
const watchBuffer = 64

// Watch subscribes to the circuits opts names and returns their events, in
// the order the changes happened, and a function that says why the stream
// ended. Watch returns once cbd has confirmed the subscription (so every
// change made after it is seen) or it has failed; the channel is closed when
// the stream ends: ctx done (the error function then returns nil), the
// connection lost, or an overflow (the overflow event is delivered, then the
// error function returns ErrWatchOverflow).
func (c *Client) Watch(ctx context.Context, opts WatchOptions) (<-chan Event, func() error) {
	events := make(chan Event, watchBuffer)
	var mu sync.Mutex
	var ended error
	errFunc := func() error {
		mu.Lock()
		defer mu.Unlock()
		return ended
	}
	end := func(err error) {
		mu.Lock()
		ended = err
		mu.Unlock()
		close(events)
	}

	nc, r, _, err := c.subscribe(ctx, opts)
	if err != nil {
		end(err)
		return events, errFunc
	}
	stopped := make(chan struct{})
	go func() {
		// Closing the connection is what stops a read in progress.
		select {
		case <-ctx.Done():
			nc.Close()
		case <-stopped:
		}
	}()
	go func() {
		defer close(stopped)
		defer nc.Close()
		for {
			line, err := readLine(r)
			if err != nil {
				if ctx.Err() != nil {
					end(nil)
				} else {
					end(clientError(CodeConnectionLost, fmt.Sprintf("lost the watch connection to cbd at %s", c.path), err))
				}
				return
			}
			var ev Event
			if err := json.Unmarshal(line, &ev); err != nil || ev.Kind == "" {
				end(&Error{Code: CodeBadReply, Message: "cbd sent a watch line that is not an event", Reply: line, Err: err})
				return
			}
			select {
			case events <- ev:
			case <-ctx.Done():
				end(nil)
				return
			}
			if ev.Kind == "overflow" {
				end(ErrWatchOverflow)
				return
			}
		}
	}()
	return events, errFunc
}

// subscribe opens a connection and waits (within the client's timeout) for
// cbd to confirm the watch. The reader it returns holds what followed the
// confirmation; the confirmation line itself is returned too (the mirror
// checks that cbd watches the key set it asked for).
func (c *Client) subscribe(ctx context.Context, opts WatchOptions) (net.Conn, *bufio.Reader, []byte, error) {
	fail := func(err error) (net.Conn, *bufio.Reader, []byte, error) { return nil, nil, nil, err }
	given := 0
	for _, set := range []bool{opts.Key != "", opts.Prefix != "", opts.Keys != nil} {
		if set {
			given++
		}
	}
	if given > 1 {
		return fail(invalid("invalid_request", "watch a key, a prefix or a key set, not more than one"))
	}
	if opts.Key != "" {
		if err := checkKey(opts.Key); err != nil {
			return fail(err)
		}
	}
	if len(opts.Prefix) > maxKeyBytes {
		return fail(invalid("invalid_request", "a prefix is at most %d bytes", maxKeyBytes))
	}
	if opts.Keys != nil {
		if len(opts.Keys) == 0 || len(opts.Keys) > maxWatchKeys {
			return fail(invalid("invalid_request", "a watch's key set is 1 to %d keys, not %d", maxWatchKeys, len(opts.Keys)))
		}
		for _, k := range opts.Keys {
			if err := checkKey(k); err != nil {
				return fail(err)
			}
		}
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return fail(clientError(CodeClosed, "the client was closed", nil))
	}
	line, _ := json.Marshal(struct {
		Op     string   `json:"op"`
		Key    string   `json:"key,omitempty"`
		Prefix string   `json:"prefix,omitempty"`
		Keys   []string `json:"keys,omitempty"`
	}{"watch", opts.Key, opts.Prefix, opts.Keys})
	if len(line) > maxRequestBytes {
		// cbd would close the connection on a line past its limit.
		return fail(invalid("invalid_request", "the watch request is %d bytes; at most %d", len(line), maxRequestBytes))
	}
	deadline := time.Now().Add(c.opts.timeout)
	dialCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var dialer net.Dialer
	nc, err := dialer.DialContext(dialCtx, "unix", c.path)
	if err != nil {
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		return fail(clientError(CodeUnavailable, fmt.Sprintf("cannot connect to cbd at %s: %v", c.path, err), err))
	}
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = nc.SetDeadline(deadline)
	r := bufio.NewReaderSize(nc, 64<<10)
	reply, err := func() ([]byte, error) {
		if _, err := nc.Write(append(line, '\n')); err != nil {
			return nil, err
		}
		return readLine(r)
	}()
	if err != nil {
		nc.Close()
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		return fail(clientError(CodeUnavailable, fmt.Sprintf("cbd at %s did not confirm the watch: %v", c.path, err), err))
	}
	var head replyHead
	if err := json.Unmarshal(reply, &head); err != nil || !head.OK {
		nc.Close()
		e := &Error{Code: CodeBadReply, Message: "cbd did not confirm the watch", Reply: reply, Err: err}
		if head.Error != nil {
			e.Code, e.Message = head.Error.Code, head.Error.Message
		}
		return fail(e)
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, r, reply, nil
}
