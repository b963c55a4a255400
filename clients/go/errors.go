package cbd

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Sentinels to test with errors.Is.
var (
	// ErrUnavailable: cbd could not decide, so a caller that fails open goes
	// ahead. Matched by the client's own codes unavailable, connection_lost and
	// timeout, and by cbd's too_many_connections, backend_unavailable and
	// storage_unavailable.
	ErrUnavailable = errors.New("cbd: unavailable")
	// ErrOpen: the circuit denied the call (Breaker.Execute returns *OpenError).
	ErrOpen = errors.New("cbd: circuit open")
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("cbd: client closed")
	// ErrWatchOverflow: the watcher fell behind cbd's queue, and cbd dropped it.
	ErrWatchOverflow = errors.New("cbd: watch overflowed")
)

// Codes the client gives itself, when cbd did not answer. cbd's own codes are
// listed in docs/PROTOCOL.md (invalid_key, conflict, forced, no_permit, ...).
const (
	// CodeUnavailable: the connect failed, or the connection is known to be
	// down and its backoff has not passed.
	CodeUnavailable = "unavailable"
	// CodeConnectionLost: the connection closed with the request sent; it may
	// or may not have been applied.
	CodeConnectionLost = "connection_lost"
	// CodeTimeout: no reply within the client's timeout. The connection is then
	// treated as down (a cbd that does not answer is not there).
	CodeTimeout = "timeout"
	// CodeBadReply: the peer sent something cbd never sends.
	CodeBadReply = "bad_reply"
	// CodeClosed: the Client was closed.
	CodeClosed = "closed"
)

// Error is every failure of a request: cbd's error reply (Code is cbd's
// code, Reply the whole reply line), or the client's own code when cbd did
// not answer (Err is then the cause, when there is one).
type Error struct {
	Code    string
	Message string
	// Reply is the whole error reply from cbd; a conflict, forced or no_permit
	// reply carries the circuit (see Circuit).
	Reply json.RawMessage
	Err   error
}

func (e *Error) Error() string {
	return fmt.Sprintf("cbd: %s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrUnavailable) true for every code that means
// "cbd cannot decide now", and errors.Is(err, ErrClosed) for a closed client.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrUnavailable:
		switch e.Code {
		case CodeUnavailable, CodeConnectionLost, CodeTimeout,
			"too_many_connections", "backend_unavailable", "storage_unavailable":
			return true
		}
	case ErrClosed:
		return e.Code == CodeClosed
	}
	return false
}

// Circuit decodes the circuit an error reply carries (conflict, forced and
// no_permit replies do); false when it carries none.
func (e *Error) Circuit() (Circuit, bool) {
	if len(e.Reply) == 0 {
		return Circuit{}, false
	}
	var w wireCircuit
	if json.Unmarshal(e.Reply, &w) != nil || w.Snapshot == nil {
		return Circuit{}, false
	}
	return w.circuit(), true
}

// OpenError is what Breaker.Execute returns when the circuit denies the call;
// errors.Is(err, ErrOpen) is true for it.
type OpenError struct {
	Key string
	// RetryAfter is how long until the circuit may allow a call (cbd's
	// retryAfterMs).
	RetryAfter time.Duration
	Circuit    Circuit
}

func (e *OpenError) Error() string {
	return fmt.Sprintf("cbd: circuit %q is %s; retry in %v", e.Key, e.Circuit.State, e.RetryAfter)
}

func (e *OpenError) Is(target error) bool { return target == ErrOpen }

func clientError(code, message string, cause error) *Error {
	return &Error{Code: code, Message: message, Err: cause}
}
