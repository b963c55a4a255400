// Dispatcher (see dispatcher.hpp).
#include "daemon/dispatcher.hpp"

#include "common/reply.hpp"
#include "daemon/log.hpp"

#include <array>
#include <exception>

namespace cbd {

Dispatcher::Dispatcher(CircuitStore& store) : store_(store) {}

Dispatcher::Handler Dispatcher::handler_for(Op op) {
    // Indexed by Op, in the order of its enumerators.
    static constexpr std::array<Handler, 6> kHandlers = {
        &Dispatcher::handle_get,        &Dispatcher::handle_success,
        &Dispatcher::handle_failure,    &Dispatcher::handle_transition,
        &Dispatcher::handle_reset,      &Dispatcher::handle_ping,
    };
    return kHandlers[static_cast<std::size_t>(op)];
}

void Dispatcher::handle_line(std::string_view line, const Peer& peer, std::string& out) {
    if (is_blank_line(line))
        return;
    const std::size_t reply_start = out.size();
    try {
        if (auto err = parse_request(line, request_)) {
            append_error_reply(out, request_.id_json, err->code, err->message);
            return;
        }
        (this->*handler_for(request_.op))(request_, peer, out);
    } catch (const std::exception& e) {
        // Whatever happened, the client still gets exactly one line.
        out.resize(reply_start);
        log_error(std::string("internal error while handling a request: ") + e.what());
        append_error_reply(out, request_.id_json, ErrorCode::InternalError, "internal error");
    }
}

void Dispatcher::reply_with(const StoreResult& result, const Request& req, std::string& out) {
    if (result.error) {
        append_error_reply(out, req.id_json, *result.error,
                           *result.error == ErrorCode::TooManyCircuits
                               ? "the daemon holds its maximum number of circuits"
                               : "the operation failed");
        return;
    }
    append_snapshot_reply(out, req.id_json, result.snapshot);
}

void Dispatcher::handle_get(const Request& req, const Peer&, std::string& out) {
    reply_with(store_.get(req.key), req, out);
}

void Dispatcher::handle_success(const Request& req, const Peer&, std::string& out) {
    reply_with(store_.record_success(req.key), req, out);
}

void Dispatcher::handle_failure(const Request& req, const Peer&, std::string& out) {
    reply_with(store_.record_failure(req.key), req, out);
}

void Dispatcher::handle_transition(const Request& req, const Peer& peer, std::string& out) {
    auto result = store_.transition(req.key, *req.to);
    if (!result.error && log_enabled(LogLevel::Info))
        log_info("audit: transition key=" + req.key + " to=" + std::string(state_name(*req.to)) +
                 " uid=" + std::to_string(peer.uid) + " pid=" + std::to_string(peer.pid));
    reply_with(result, req, out);
}

void Dispatcher::handle_reset(const Request& req, const Peer& peer, std::string& out) {
    const bool removed = store_.reset(req.key);
    if (log_enabled(LogLevel::Info))
        log_info("audit: reset key=" + req.key + " removed=" + (removed ? "true" : "false") +
                 " uid=" + std::to_string(peer.uid) + " pid=" + std::to_string(peer.pid));
    append_reset_reply(out, req.id_json, removed);
}

void Dispatcher::handle_ping(const Request& req, const Peer&, std::string& out) {
    append_ping_reply(out, req.id_json);
}

} // namespace cbd
