// The pure parts of the HTTP listener (http_server.*): what a request target
// asks for, which protocol request it becomes, whether a Host header may be
// served, where to listen, and the bytes of a Server-Sent Events stream. No
// I/O here, so unit tests drive every rule the listener applies to input.
#pragma once

#include "daemon/dispatch/event_hub.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <cstddef>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cbd {

// Longest request target (path and query) served; longer is a 414.
inline constexpr std::size_t kMaxHttpTargetBytes = 4096;
// Longest request head (request line, header fields, their CRLFs and the
// blank line): a 431 beyond, or a 414 when the request line alone is longer.
inline constexpr std::size_t kMaxHttpHeadBytes = 8 * 1024;
// Connections served at once besides event streams (the daemon's descriptor
// budget counts them); at the limit the one idle longest makes room.
inline constexpr std::size_t kMaxHttpConnections = 16;
// Most /api/events clients at once unless --http-max-event-clients says.
inline constexpr std::size_t kDefaultHttpEventClients = 32;

// One request head, as the listener serves it: a GET or HEAD of HTTP/1.x
// with exactly one Host (none in HTTP/1.0) and no body.
struct HttpRequestHead {
    std::string method;
    std::string target;
    unsigned minor_version = 1; // HTTP/1.minor
    std::string host;           // the Host field's value; empty when absent (HTTP/1.0)
    bool keep_alive = false;    // HTTP/1.1 without "Connection: close"
};

// Why a request is refused: its status (400, 405, 413, 414, 431 or 505)
// and a line for the body.
struct HttpRefusal {
    unsigned status = 400;
    std::string reason;
};

// Collects one request head at a time from the bytes of a connection, in
// whatever pieces they arrive, and decides it: complete, or refused with the
// status the client is to get before the close. Strict where leniency is
// how requests get smuggled or misread (RFC 9112): CRLF line ends only (a
// bare LF or CR is a 400), no space before a field's colon, no folded
// fields, exactly one Host in HTTP/1.1, at most one Content-Length and
// never beside Transfer-Encoding. The listener takes no request body (413)
// and only GET and HEAD (405); HTTP/2 and later are a 505. Bounded: a head
// longer than kMaxHttpHeadBytes is refused as soon as that many bytes have
// no end, and a first line that cannot be a request line as soon as a
// byte shows it (a TLS handshake is a 400 at its first byte).
class HttpHeadReader {
  public:
    enum class State {
        Empty,    // nothing of a head yet
        Partial,  // some bytes, no end yet
        Complete, // head() is the request
        Refused,  // refusal() says why; the connection is to be closed
    };

    // Takes the next bytes of the connection.
    State feed(std::string_view bytes);
    // After Complete: forgets that head and reads what came after it (a
    // pipelined request), which may itself be complete already.
    State next();

    State state() const { return state_; }
    const HttpRequestHead& head() const { return head_; }
    const HttpRefusal& refusal() const { return refusal_; }

  private:
    State scan();
    State refuse(unsigned status, std::string reason);

    std::string buffer_;      // this head's bytes and any after it
    std::size_t scanned_ = 0; // bytes of buffer_ checked so far
    std::size_t line_start_ = 0;
    std::size_t head_start_ = 0; // after empty lines before the request line
    std::size_t head_end_ = 0;   // after Complete: where the next request starts
    bool in_request_line_ = true;
    bool method_ended_ = false; // the request line's first space has come
    State state_ = State::Empty;
    HttpRequestHead head_;
    HttpRefusal refusal_;
};

// Parses a whole head (up to and including its blank line's CRLF; the line
// ends are already known to be CRLF) into `head`, or says why it is refused.
std::optional<HttpRefusal> parse_http_head(std::string_view text, HttpRequestHead& head);

// The reason phrase of a status the listener sends.
std::string_view http_reason(unsigned status);

// One response of the listener, serialized whole.
struct HttpResponse {
    unsigned status = 200;
    std::string content_type = "text/plain";
    std::vector<std::pair<std::string, std::string>> fields; // more header fields
    std::string body;
    bool head_only = false; // HEAD: the length of the body, not the body
    bool keep_alive = false;
};
std::string serialize_http_response(const HttpResponse& response);

enum class HttpRoute { Dashboard, Metrics, Circuits, Policy, Events, NotFound };

struct HttpTarget {
    HttpRoute route = HttpRoute::NotFound;
    // Decoded query parameters, in the order given; names are unique.
    std::vector<std::pair<std::string, std::string>> params;

    const std::string* param(std::string_view name) const;
};

// Splits "/path?name=value&..." and percent-decodes the query ('+' is a
// space). Returns nullopt with `error` set for a target over the limit, a bad
// %-escape, a repeated parameter, or a parameter the route does not take
// (each route names its own, at most four; see the .cpp), so the parameters
// are bounded by the route.
std::optional<HttpTarget> parse_http_target(std::string_view target, std::string& error);

// The protocol request an /api route stands for, as one request line for the
// Dispatcher: `list` for /api/circuits, `policy` for /api/policy. Both are
// read-level operations that change nothing. Values are passed on as given
// (the dispatcher validates them, as it does for every client); only `limit`
// must be a decimal integer here, since the line carries it as a number.
// nullopt with `error` set when a parameter cannot be carried.
std::optional<std::string> api_request_line(const HttpTarget& target, std::string& error);

// The watch filter of /api/events: every circuit, or ?prefix=.
WatchFilter event_filter(const HttpTarget& target);

// /metrics?perCircuit=true (or 1) adds the per-circuit series (as the
// `metrics` op's perCircuit field does); false, 0 or no parameter leave them
// out. Any other value is nullopt with `error` set (a 400), not a silent no.
std::optional<bool> metrics_per_circuit(const HttpTarget& target, std::string& error);

// The HTTP status for a protocol reply line: 200 when ok; for an error,
// 503 when the backend or storage is unavailable (worth retrying), 500 for
// backend_error and internal_error, 400 for everything the request got wrong.
unsigned http_status_for_reply(std::string_view reply);

// ADDR:PORT (IPv6 in brackets) to an endpoint; nullopt with `error` set.
std::optional<boost::asio::ip::tcp::endpoint> parse_listen_address(std::string_view listen,
                                                                   std::string& error);

// May a request naming this Host be served? On a loopback listener only IP
// literals and "localhost" (with an optional port): a web page elsewhere
// cannot read the API by pointing its own domain name at 127.0.0.1 (DNS
// rebinding). An HTTP/1.0 request without Host is served (browsers always
// send one; HttpHeadReader refuses HTTP/1.1 without one). With
// --http-allow-remote the operator chose the exposure and any Host is served.
bool http_host_allowed(std::string_view host, bool allow_remote);

// One SSE message whose data is `text`: each line becomes a "data:" line,
// so any text frames safely. A trailing "\n" of `text` is not a line.
std::string sse_message(std::string_view text);
// A comment line, which EventSource ignores: keeps idle streams alive
// through proxies and finds clients that are gone.
inline constexpr std::string_view kSseKeepalive = ": keepalive\n\n";

// The unsent events of one SSE client, bounded as a watcher's are: past
// `bound` events the client has fallen behind, loses its queue and is to be
// dropped after one overflow message (exactly what a watching Session does).
class SseQueue {
  public:
    explicit SseQueue(std::size_t bound) : bound_(bound) {}

    // Queues one event line. False when this overflowed the queue (and on
    // every push after): the events are dropped and counted in dropped().
    bool push(const std::shared_ptr<const std::string>& event_line);
    // Appends the queued events to `out` as SSE messages and empties the
    // queue; after an overflow, appends only the overflow message, once.
    void take(std::string& out);

    bool empty() const { return events_.empty() && !(overflowed_ && !overflow_taken_); }
    bool overflowed() const { return overflowed_; }
    std::size_t dropped() const { return dropped_; }

  private:
    std::size_t bound_;
    std::deque<std::shared_ptr<const std::string>> events_;
    bool overflowed_ = false;
    bool overflow_taken_ = false;
    std::size_t dropped_ = 0;
};

} // namespace cbd
