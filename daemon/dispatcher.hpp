// The dispatcher: one request line in, one reply line out, no I/O. It parses
// and validates through common/ (once, centrally), then calls the handler for
// the op from a table indexed by Op. Operator actions are audit-logged here
// with the peer's credentials.
#pragma once

#include "common/protocol.hpp"
#include "common/request.hpp"
#include "daemon/circuit_store.hpp"
#include "daemon/event_hub.hpp"
#include "daemon/peer.hpp"
#include "daemon/stats.hpp"

#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <string>
#include <string_view>

namespace cbd {

class RedisStore;
struct RemoteResult;

// A reply that is written later: a remote store's answer. The session keeps
// its place among the connection's replies and sends it in order once it is
// complete.
struct DeferredReply {
    std::string text;
    std::function<void()> on_complete; // set by the session
    void complete() {
        if (on_complete)
            std::exchange(on_complete, nullptr)();
    }
};

// What a session offers the dispatcher for replies that come later.
class ReplyDeferral {
  public:
    // A slot at the current end of the connection's replies.
    virtual std::shared_ptr<DeferredReply> take_slot() = 0;

  protected:
    ~ReplyDeferral() = default;
};

// The connection a request came on, as the dispatcher sees it: who sent it,
// and what the request asks of the connection beyond its reply.
struct RequestContext {
    Peer peer;
    AccessLevel level = AccessLevel::Admin; // from the peer's credentials
    // Set by `watch`: the connection becomes an event stream with this filter.
    std::optional<WatchFilter> start_watch;
    // The request of the line just handled, when it parsed (valid until the
    // next line): sessions holding replies for a group commit note its key.
    const Request* request = nullptr;
    // Where replies that come later go; nullptr where nothing can wait (then
    // a remote operation is answered internal_error).
    ReplyDeferral* deferral = nullptr;
};

class Dispatcher {
  public:
    Dispatcher(CircuitStore& store, DaemonStats& stats);

    // --backend redis: circuit operations go to `remote` (their replies come
    // later); `store` still resolves policies from the daemon's configuration.
    void set_remote(RedisStore* remote) { remote_ = remote; }

    // Handles one line (without its "\n"). Appends exactly one reply line to
    // `out`, or nothing when the line is blank.
    void handle_line(std::string_view line, RequestContext& ctx, std::string& out);

    // The Prometheus text for the current state (also served over HTTP).
    std::string metrics_text(bool per_circuit);

  private:
    using Handler = void (Dispatcher::*)(const Request&, RequestContext&, std::string&);
    static Handler handler_for(Op op);
    // The reply (and audit line) for an op above the connection's level.
    void refuse(const Request& req, const RequestContext& ctx, const OpSpec& spec,
                std::string& out);

    void handle_get(const Request& req, RequestContext& ctx, std::string& out);
    void handle_success(const Request& req, RequestContext& ctx, std::string& out);
    void handle_failure(const Request& req, RequestContext& ctx, std::string& out);
    void handle_transition(const Request& req, RequestContext& ctx, std::string& out);
    void handle_reset(const Request& req, RequestContext& ctx, std::string& out);
    void handle_ping(const Request& req, RequestContext& ctx, std::string& out);
    void handle_acquire(const Request& req, RequestContext& ctx, std::string& out);
    void handle_report(const Request& req, RequestContext& ctx, std::string& out);
    void handle_force(const Request& req, RequestContext& ctx, std::string& out);
    void handle_unforce(const Request& req, RequestContext& ctx, std::string& out);
    void handle_configure(const Request& req, RequestContext& ctx, std::string& out);
    void handle_policy(const Request& req, RequestContext& ctx, std::string& out);
    void handle_watch(const Request& req, RequestContext& ctx, std::string& out);
    void handle_list(const Request& req, RequestContext& ctx, std::string& out);
    void handle_stats(const Request& req, RequestContext& ctx, std::string& out);
    void handle_metrics(const Request& req, RequestContext& ctx, std::string& out);
    void handle_export(const Request& req, RequestContext& ctx, std::string& out);
    // A circuit operation on the remote store; false when the op is not one.
    bool handle_remote(const Request& req, RequestContext& ctx, std::string& out);
    // The reply to a remote operation, once the backend has answered.
    void remote_reply(const Request& req, const Peer& peer, const RemoteResult& r,
                      std::string& out);
    void handle_import(const Request& req, RequestContext& ctx, std::string& out);

    CircuitStore& store_;
    DaemonStats& stats_;
    RedisStore* remote_ = nullptr;
    Request request_; // reused across lines to keep its buffers
};

} // namespace cbd
