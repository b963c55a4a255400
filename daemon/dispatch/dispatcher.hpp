// The dispatcher: one request line in, one reply out, no I/O. It parses and
// validates through common/ (once, centrally), answers the daemon's own ops
// (ping, watch, stats, metrics) from a table indexed by Op, and hands every
// circuit operation to the one CircuitBackend, whichever backend that is.
// The reply (reply_builder.hpp), the audit line and the counters for an
// operation's outcome are written here, once for every backend. Replies go into the connection's
// ReplyQueue: at once when the backend answers at once, into a reserved slot
// when it answers later.
#pragma once

#include "common/protocol.hpp"
#include "common/request.hpp"
#include "daemon/core/peer.hpp"
#include "daemon/dispatch/circuit_backend.hpp"
#include "daemon/dispatch/event_hub.hpp"
#include "daemon/dispatch/reply_queue.hpp"
#include "daemon/dispatch/stats.hpp"

#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace cbd {

// The connection a request came on, as the dispatcher sees it: who sent it,
// where its replies go, and what the request asks of the connection beyond
// its reply.
struct RequestContext {
    Peer peer;
    AccessLevel level = AccessLevel::Admin; // from the peer's credentials
    // Set by `watch`: the connection becomes an event stream with this filter.
    std::optional<WatchFilter> start_watch;
    // The connection's replies, in request order. Shared with the answers
    // that come later, which may outlive the connection (and then fill a
    // queue nobody reads).
    std::shared_ptr<ReplyQueue> replies;
    // Set by each line: the backend operations it ran (a reportBatch runs one
    // per entry), which the session's per-turn budget counts.
    std::size_t operations = 0;
};

class Dispatcher {
  public:
    Dispatcher(CircuitBackend& backend, DaemonStats& stats);

    // Handles one line (without its "\n"): puts exactly one reply into
    // ctx.replies (now, or a slot filled later), or nothing when the line is
    // blank.
    void handle_line(std::string_view line, RequestContext& ctx);
    // The same, for callers whose backend answers at once (tests, the
    // fuzzer): appends the reply to `out`.
    void handle_line(std::string_view line, RequestContext& ctx, std::string& out);

    // The Prometheus text for the current state (also served over HTTP).
    std::string metrics_text(bool per_circuit);

  private:
    using Handler = void (Dispatcher::*)(const Request&, RequestContext&, std::string&);
    static Handler handler_for(Op op);
    // The reply (and audit line) for an op above the connection's level.
    void refuse(const Request& req, const RequestContext& ctx, const OpSpec& spec,
                std::string& out);

    // A circuit operation: to the backend, and its outcome to a reply.
    void run_circuit_op(const Request& req, RequestContext& ctx);
    // A reportBatch: each entry to the backend as a report, in order, and
    // one reply of counts once the last has answered.
    void run_report_batch(const Request& req, RequestContext& ctx);
    // The reply, audit line and counters for one outcome; every backend's
    // answers come through here.
    void reply_for(const Request& req, const Peer& peer, const OpOutcome& r, std::string& out);

    void handle_ping(const Request& req, RequestContext& ctx, std::string& out);
    void handle_watch(const Request& req, RequestContext& ctx, std::string& out);
    void handle_stats(const Request& req, RequestContext& ctx, std::string& out);
    void handle_metrics(const Request& req, RequestContext& ctx, std::string& out);

    CircuitBackend& backend_;
    DaemonStats& stats_;
    Request request_;                             // reused across lines to keep its buffers
    OpOutcome outcome_;                           // likewise, for answers given at once
    std::shared_ptr<ReplyQueue> scratch_replies_; // for handle_line(..., out)
};

} // namespace cbd
