// Dispatcher (see dispatcher.hpp).
#include "daemon/dispatcher.hpp"

#include "common/reply.hpp"
#include "daemon/log.hpp"

#include <array>
#include <exception>

namespace cbd {

namespace {

std::string forced_json(const ForcePin& pin) {
    std::string out = "{\"state\":\"";
    out += state_name(pin.state);
    out += "\",\"until\":";
    if (pin.until != 0)
        append_int(out, pin.until);
    else
        out += "null";
    out += ",\"reason\":";
    append_json_string(out, pin.reason);
    out += ",\"by\":{\"uid\":";
    append_uint(out, pin.by.uid);
    out += ",\"pid\":";
    append_int(out, pin.by.pid);
    out += "}}";
    return out;
}

std::string transition_json(const TransitionRecord& t) {
    std::string out = "{\"from\":\"";
    out += state_name(t.from);
    out += "\",\"to\":\"";
    out += state_name(t.to);
    out += "\",\"cause\":\"";
    out += transition_cause_name(t.cause);
    out += "\"}";
    return out;
}

// snapshot, generation and (when pinned) forced: what every reply about a
// circuit carries.
ReplyWriter& circuit_fields(ReplyWriter& w, const CircuitView& v) {
    w.snapshot(v.snapshot).field("generation", v.generation);
    if (v.forced)
        w.raw_field("forced", forced_json(*v.forced));
    return w;
}

std::string error_message(ErrorCode code, const CircuitView& v) {
    switch (code) {
    case ErrorCode::TooManyCircuits:
        return "the daemon holds its maximum number of circuits";
    case ErrorCode::Conflict:
        return "the circuit is " + std::string(state_name(v.snapshot.state)) + " at generation " +
               std::to_string(v.generation) + "; the expectation did not hold";
    case ErrorCode::Forced:
        return "the circuit is forced " +
               std::string(v.forced ? state_name(v.forced->state) : "") +
               "; unforce it before changing its state";
    case ErrorCode::NoPermit:
        return "the circuit is half-open and this report carries no valid probe permit";
    default:
        return "the operation failed";
    }
}

// Errors that concern a circuit carry its current state, so the client can
// decide what to do next without another round trip.
void circuit_error(std::string& out, const Request& req, ErrorCode code, const CircuitView& v) {
    ReplyWriter w(out, req.id_json, false);
    w.error(code, error_message(code, v));
    if (code == ErrorCode::Conflict || code == ErrorCode::Forced || code == ErrorCode::NoPermit)
        circuit_fields(w, v);
    w.finish();
}

void circuit_reply(std::string& out, const Request& req, const StoreResult& r) {
    if (r.error) {
        circuit_error(out, req, *r.error, r.circuit);
        return;
    }
    ReplyWriter w(out, req.id_json, true);
    circuit_fields(w, r.circuit);
    if (r.transition)
        w.raw_field("transition", transition_json(*r.transition));
    w.finish();
}

void audit(const Request& req, const Peer& peer, std::string_view what) {
    if (!log_enabled(LogLevel::Info))
        return;
    // Keys and reasons hold no control characters (validated), so a log
    // line stays one line.
    log_info("audit: " + std::string(op_spec(req.op).name) + " key=" + req.key + " " +
             std::string(what) + " uid=" + std::to_string(peer.uid) +
             " pid=" + std::to_string(peer.pid));
}

void policy_reply(std::string& out, const Request& req, const PolicyResult& r) {
    if (r.error) {
        append_error_reply(out, req.id_json, *r.error,
                           "the daemon holds its maximum number of key policies");
        return;
    }
    std::string sources = "{";
    for (std::size_t i = 0; i < kPolicyFieldCount; ++i) {
        if (i)
            sources += ',';
        sources += '"';
        sources += kPolicyFieldNames[i];
        sources += "\":\"";
        sources += policy_source_name(r.resolved.sources[i]);
        sources += '"';
    }
    sources += '}';
    ReplyWriter w(out, req.id_json, true);
    w.string_field("key", req.key)
        .raw_field("policy", policy_json(r.resolved.policy))
        .raw_field("source", sources);
    if (r.resolved.prefix.empty())
        w.raw_field("prefix", "null");
    else
        w.string_field("prefix", r.resolved.prefix);
    w.finish();
}

} // namespace

Dispatcher::Dispatcher(CircuitStore& store) : store_(store) {}

Dispatcher::Handler Dispatcher::handler_for(Op op) {
    // Indexed by Op, in the order of its enumerators.
    static constexpr std::array<Handler, kOpCount> kHandlers = {
        &Dispatcher::handle_get,       &Dispatcher::handle_success,
        &Dispatcher::handle_failure,   &Dispatcher::handle_transition,
        &Dispatcher::handle_reset,     &Dispatcher::handle_ping,
        &Dispatcher::handle_acquire,   &Dispatcher::handle_report,
        &Dispatcher::handle_force,     &Dispatcher::handle_unforce,
        &Dispatcher::handle_configure, &Dispatcher::handle_policy,
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

void Dispatcher::handle_get(const Request& req, const Peer&, std::string& out) {
    circuit_reply(out, req, store_.get(req.key));
}

void Dispatcher::handle_success(const Request& req, const Peer&, std::string& out) {
    circuit_reply(out, req, store_.record_success(req.key));
}

void Dispatcher::handle_failure(const Request& req, const Peer&, std::string& out) {
    circuit_reply(out, req, store_.record_failure(req.key));
}

void Dispatcher::handle_transition(const Request& req, const Peer& peer, std::string& out) {
    auto result = store_.transition(req.key, *req.to, {req.expect, req.expect_generation});
    audit(req, peer,
          "to=" + std::string(state_name(*req.to)) +
              (result.error ? " refused=" + std::string(error_code_name(*result.error)) : ""));
    circuit_reply(out, req, result);
}

void Dispatcher::handle_reset(const Request& req, const Peer& peer, std::string& out) {
    const bool removed = store_.reset(req.key);
    audit(req, peer, removed ? "removed=true" : "removed=false");
    append_reset_reply(out, req.id_json, removed);
}

void Dispatcher::handle_ping(const Request& req, const Peer&, std::string& out) {
    append_ping_reply(out, req.id_json);
}

void Dispatcher::handle_acquire(const Request& req, const Peer&, std::string& out) {
    auto r = store_.acquire(req.key);
    if (r.error) {
        circuit_error(out, req, *r.error, r.circuit);
        return;
    }
    ReplyWriter w(out, req.id_json, true);
    w.field("allowed", r.allowed);
    if (r.allowed && !r.permit.empty())
        w.string_field("permit", r.permit);
    if (!r.allowed)
        w.field("retryAfterMs", r.retry_after_ms);
    circuit_fields(w, r.circuit);
    if (r.transition)
        w.raw_field("transition", transition_json(*r.transition));
    w.finish();
}

void Dispatcher::handle_report(const Request& req, const Peer&, std::string& out) {
    auto r = store_.report(req.key, req.outcome, req.generation, req.permit);
    if (r.error) {
        circuit_error(out, req, *r.error, r.circuit);
        return;
    }
    ReplyWriter w(out, req.id_json, true);
    if (r.stale)
        w.field("stale", true);
    circuit_fields(w, r.circuit);
    if (r.transition)
        w.raw_field("transition", transition_json(*r.transition));
    w.finish();
}

void Dispatcher::handle_force(const Request& req, const Peer& peer, std::string& out) {
    auto r = store_.force(req.key, req.state, req.ttl_ms, req.reason, peer);
    audit(req, peer,
          "state=" + std::string(state_name(req.state)) +
              " ttlMs=" + std::to_string(req.ttl_ms) + " reason=\"" + req.reason + "\"");
    circuit_reply(out, req, r);
}

void Dispatcher::handle_unforce(const Request& req, const Peer& peer, std::string& out) {
    auto r = store_.unforce(req.key);
    audit(req, peer, r.transition ? "lifted=true" : "lifted=false");
    circuit_reply(out, req, r);
}

void Dispatcher::handle_configure(const Request& req, const Peer& peer, std::string& out) {
    auto r = store_.configure(req.key, req.policy, req.policy_removed, req.policy_clear);
    std::string what = req.policy_clear ? "clear=true " : "";
    what += "set=";
    std::string set_fields;
    for (std::size_t i = 0; i < kPolicyFieldCount; ++i)
        if (req.policy.values[i])
            set_fields += (set_fields.empty() ? "" : ",") + std::string(kPolicyFieldNames[i]) +
                          ":" + std::to_string(*req.policy.values[i]);
    std::string unset_fields;
    for (std::size_t i = 0; i < kPolicyFieldCount; ++i)
        if (req.policy_removed.values[i])
            unset_fields += (unset_fields.empty() ? "" : ",") + std::string(kPolicyFieldNames[i]);
    audit(req, peer,
          what + (set_fields.empty() ? "-" : set_fields) +
              (unset_fields.empty() ? "" : " unset=" + unset_fields));
    policy_reply(out, req, r);
}

void Dispatcher::handle_policy(const Request& req, const Peer&, std::string& out) {
    policy_reply(out, req, store_.policy(req.key));
}

} // namespace cbd
