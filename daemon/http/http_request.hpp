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
// Most /api/events clients at once unless --http-max-event-clients says.
inline constexpr std::size_t kDefaultHttpEventClients = 32;

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

// /metrics?perCircuit=true adds the per-circuit series (as the `metrics` op's
// perCircuit field does).
bool metrics_per_circuit(const HttpTarget& target);

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
// rebinding). A request without Host is served (browsers always send
// one). With --http-allow-remote the operator chose the exposure and
// any Host is served.
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
