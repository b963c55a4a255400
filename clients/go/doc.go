// Package cbd is the Go client of cbd, the host-wide circuit-breaker daemon
// (docs/PROTOCOL.md in the cbd repository, protocol version 7; mirror mode and
// key-set watches need 9).
//
// One *Client holds one connection to cbd's Unix socket and pipelines the
// requests of every goroutine over it: cbd answers in request order on each
// connection, so replies are matched to requests by position (and checked
// against the id each request carries).
//
// A client that fails open must fail fast. When the socket is missing or
// refuses (ENOENT, ECONNREFUSED), or while the connection is known to be down,
// calls return an error matching ErrUnavailable at once, without waiting for
// a timeout; the next call after a backoff (50 ms, doubling to 2 s) tries to
// connect again.
//
//	c := cbd.NewClient("") // "" follows the socket-path rule; connects on first use
//	b := c.Breaker("payments")
//	err := b.Execute(ctx, func(ctx context.Context) error { return charge(ctx) })
//	if errors.Is(err, cbd.ErrOpen) { ... } // denied: the circuit is open
//
// Mirror mode (WithMirror, protocol 9) lets Breaker.Execute decide most calls
// locally from a copy of each circuit kept current by a key-set watch, and
// report outcomes in batches; see mirror.go and the README.
package cbd
