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

	nc, r, err := c.subscribe(ctx, opts)
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
// confirmation.
func (c *Client) subscribe(ctx context.Context, opts WatchOptions) (net.Conn, *bufio.Reader, error) {
	if opts.Key != "" && opts.Prefix != "" {
		return nil, nil, invalid("invalid_request", "watch a key or a prefix, not both")
	}
	if opts.Key != "" {
		if err := checkKey(opts.Key); err != nil {
			return nil, nil, err
		}
	}
	if len(opts.Prefix) > maxKeyBytes {
		return nil, nil, invalid("invalid_request", "a prefix is at most %d bytes", maxKeyBytes)
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, nil, clientError(CodeClosed, "the client was closed", nil)
	}
	deadline := time.Now().Add(c.opts.timeout)
	dialCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var dialer net.Dialer
	nc, err := dialer.DialContext(dialCtx, "unix", c.path)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, clientError(CodeUnavailable, fmt.Sprintf("cannot connect to cbd at %s: %v", c.path, err), err)
	}
	line, _ := json.Marshal(struct {
		Op     string `json:"op"`
		Key    string `json:"key,omitempty"`
		Prefix string `json:"prefix,omitempty"`
	}{"watch", opts.Key, opts.Prefix})
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
			return nil, nil, ctx.Err()
		}
		return nil, nil, clientError(CodeUnavailable, fmt.Sprintf("cbd at %s did not confirm the watch: %v", c.path, err), err)
	}
	var head replyHead
	if err := json.Unmarshal(reply, &head); err != nil || !head.OK {
		nc.Close()
		e := &Error{Code: CodeBadReply, Message: "cbd did not confirm the watch", Reply: reply, Err: err}
		if head.Error != nil {
			e.Code, e.Message = head.Error.Code, head.Error.Message
		}
		return nil, nil, e
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, r, nil
}
