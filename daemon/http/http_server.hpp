// The optional HTTP listener (--http-listen ADDR:PORT, alias --metrics-listen).
// Read-only: nothing served here changes state.
//
//   GET /               the dashboard (one embedded HTML page, http_dashboard.hpp)
//   GET /metrics        Prometheus text, as `cbctl metrics` (?perCircuit=true)
//   GET /api/circuits   one `list` page as JSON (?prefix, state, after, limit)
//   GET /api/policy     a key's effective policy and its sources (?key)
//   GET /api/events     Server-Sent Events: the watch stream (?prefix)
//
// /api/circuits and /api/policy are protocol requests made by a read-level
// peer through the Dispatcher, the one request path every backend answers
// (at once, or later for Redis), so HTTP adds no second way to the circuits
// and cannot run an operation that writes. /api/events subscribes to the
// EventHub like a `watch` connection, with the same bounded queue and the
// same fate when it falls behind.
//
// It must never be a way to hurt the daemon, nor one client a way to shut
// out the others: heads parsed strictly and bounded (HttpHeadReader), a
// deadline for each head and for each idle keep-alive connection, and at
// most kMaxHttpConnections connections at once, where a newcomer at the
// limit closes the connection idle longest rather than being refused, so
// holding connections open (or trickling bytes into them) does not keep a
// scraper out; event streams have their own cap. A loopback address unless
// --http-allow-remote, and Host headers checked against DNS rebinding (see
// http_request.hpp).
#pragma once

#include "daemon/dispatch/dispatcher.hpp"
#include "daemon/dispatch/event_hub.hpp"
#include "daemon/dispatch/stats.hpp"
#include "daemon/http/http_request.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <memory>
#include <string>
#include <unordered_set>

namespace cbd {

struct HttpServerOptions {
    std::string listen;        // ADDR:PORT
    bool allow_remote = false; // else only a loopback address may be bound
    std::size_t max_event_clients = kDefaultHttpEventClients;
    std::size_t event_queue = kDefaultWatchQueue; // as --watch-queue for watchers
};

class HttpConnection;
class HttpEventStream;

class HttpServer {
  public:
    // Throws StartupError when `listen` is not ADDR:PORT, is not loopback
    // without allow_remote, or cannot be bound.
    HttpServer(boost::asio::io_context& io, const HttpServerOptions& options,
               Dispatcher& dispatcher, EventHub& events, DaemonStats& stats);

    void start();
    // Stops accepting, ends every event stream and closes the connections
    // waiting for a request; requests being answered finish within their
    // timeout, then close.
    void stop();
    std::string local_endpoint() const;

    // Shared with connections and streams, which may outlive the server
    // when the loop is torn down with work pending.
    struct Shared {
        Dispatcher& dispatcher;
        EventHub& events;
        DaemonStats& stats;
        HttpServerOptions options;
        std::unordered_set<HttpConnection*> connections; // at most kMaxHttpConnections
        std::unordered_set<HttpEventStream*> streams;
        bool stopped = false;
    };

  private:
    void accept_next();

    boost::asio::ip::tcp::acceptor acceptor_;
    boost::asio::steady_timer accept_backoff_;
    std::shared_ptr<Shared> shared_;
};

} // namespace cbd
