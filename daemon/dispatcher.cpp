// Dispatcher (see dispatcher.hpp).
#include "daemon/dispatcher.hpp"

#include "common/reply.hpp"
#include "daemon/circuit_json.hpp"
#include "daemon/log.hpp"
#include "daemon/metrics.hpp"
#include "daemon/redis_store.hpp"

#include <array>
#include <exception>
#include <nlohmann/json.hpp>

namespace cbd {

namespace {

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
void circuit_error(std::string& out, const Request& req, ErrorCode code, const CircuitView& v,
                   DaemonStats& stats) {
    stats.errors[static_cast<std::size_t>(code)] += 1;
    ReplyWriter w(out, req.id_json, false);
    w.error(code, error_message(code, v));
    if (code == ErrorCode::Conflict || code == ErrorCode::Forced || code == ErrorCode::NoPermit)
        circuit_fields(w, v);
    w.finish();
}

void circuit_reply(std::string& out, const Request& req, const StoreResult& r,
                   DaemonStats& stats) {
    if (r.error) {
        circuit_error(out, req, *r.error, r.circuit, stats);
        return;
    }
    ReplyWriter w(out, req.id_json, true);
    circuit_fields(w, r.circuit);
    if (r.transition)
        w.raw_field("transition", transition_json(*r.transition));
    w.finish();
}

void acquire_reply(std::string& out, const Request& req, const AcquireResult& r,
                   DaemonStats& stats) {
    if (r.error) {
        circuit_error(out, req, *r.error, r.circuit, stats);
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

void report_reply(std::string& out, const Request& req, const ReportResult& r,
                  DaemonStats& stats) {
    if (r.error) {
        circuit_error(out, req, *r.error, r.circuit, stats);
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

void audit(const Request& req, const Peer& peer, std::string_view what) {
    if (!log_enabled(LogLevel::Info))
        return;
    // Keys and reasons hold no control characters (validated), so a log
    // line stays one line.
    log_info("audit: " + std::string(op_spec(req.op).name) + " key=" + req.key + " " +
             std::string(what) + " uid=" + std::to_string(peer.uid) +
             " pid=" + std::to_string(peer.pid));
}

void list_reply(std::string& out, const Request& req, const ListPage& page) {
    ReplyWriter w(out, req.id_json, true);
    std::string circuits = "[";
    for (const auto& e : page.circuits) {
        if (circuits.size() > 1)
            circuits += ',';
        append_list_entry(circuits, e.key, e.circuit);
    }
    circuits += ']';
    w.raw_field("circuits", circuits);
    if (page.next.empty())
        w.raw_field("next", "null");
    else
        w.string_field("next", page.next);
    w.finish();
}

void export_reply(std::string& out, const Request& req, const ExportPage& page) {
    std::string circuits = "[";
    for (const auto& record : page.circuits) {
        if (circuits.size() > 1)
            circuits += ',';
        append_stored_circuit(circuits, record);
    }
    circuits += ']';
    ReplyWriter w(out, req.id_json, true);
    w.raw_field("circuits", circuits);
    if (page.next.empty())
        w.raw_field("next", "null");
    else
        w.string_field("next", page.next);
    w.finish();
}

// The audit texts of operator actions, shared by both backends.
std::string transition_audit_text(const Request& req, const std::optional<ErrorCode>& error) {
    return "to=" + std::string(state_name(*req.to)) +
           (error ? " refused=" + std::string(error_code_name(*error)) : "");
}

std::string force_audit_text(const Request& req) {
    return "state=" + std::string(state_name(req.state)) + " ttlMs=" + std::to_string(req.ttl_ms) +
           " reason=\"" + req.reason + "\"";
}

// What an `import` request asks the key to hold.
StoredCircuit imported_record(const Request& req) {
    StoredCircuit record;
    record.key = req.key;
    if (req.snapshot) {
        CircuitView v{*req.snapshot, *req.generation, std::nullopt};
        if (const auto& pin = req.forced) {
            Peer by;
            by.uid = static_cast<uid_t>(pin->uid);
            by.pid = static_cast<pid_t>(pin->pid);
            v.forced = ForcePin{pin->state, pin->until, pin->reason, by};
        }
        record.circuit = std::move(v);
    }
    record.policy = req.policy;
    return record;
}

std::string import_audit_text(const StoredCircuit& record) {
    return record.circuit ? "state=" + std::string(state_name(record.circuit->snapshot.state)) +
                                " generation=" + std::to_string(record.circuit->generation)
                          : std::string("policy only");
}

void import_reply(std::string& out, const Request& req, const StoredCircuit& record) {
    ReplyWriter w(out, req.id_json, true);
    w.string_field("key", req.key);
    if (record.circuit)
        circuit_fields(w, *record.circuit);
    w.finish();
}

// What a configure request changes, for its audit line.
std::string configure_audit_text(const Request& req) {
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
    return what + (set_fields.empty() ? "-" : set_fields) +
           (unset_fields.empty() ? "" : " unset=" + unset_fields);
}

void policy_reply(std::string& out, const Request& req, const PolicyResult& r,
                  DaemonStats& stats) {
    if (r.error) {
        stats.errors[static_cast<std::size_t>(*r.error)] += 1;
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

Dispatcher::Dispatcher(CircuitStore& store, DaemonStats& stats) : store_(store), stats_(stats) {}

Dispatcher::Handler Dispatcher::handler_for(Op op) {
    // A switch, so that an op without a handler does not compile (-Wswitch).
    switch (op) {
    case Op::Get:
        return &Dispatcher::handle_get;
    case Op::Success:
        return &Dispatcher::handle_success;
    case Op::Failure:
        return &Dispatcher::handle_failure;
    case Op::Transition:
        return &Dispatcher::handle_transition;
    case Op::Reset:
        return &Dispatcher::handle_reset;
    case Op::Ping:
        return &Dispatcher::handle_ping;
    case Op::Acquire:
        return &Dispatcher::handle_acquire;
    case Op::Report:
        return &Dispatcher::handle_report;
    case Op::Force:
        return &Dispatcher::handle_force;
    case Op::Unforce:
        return &Dispatcher::handle_unforce;
    case Op::Configure:
        return &Dispatcher::handle_configure;
    case Op::Policy:
        return &Dispatcher::handle_policy;
    case Op::Watch:
        return &Dispatcher::handle_watch;
    case Op::List:
        return &Dispatcher::handle_list;
    case Op::Stats:
        return &Dispatcher::handle_stats;
    case Op::Metrics:
        return &Dispatcher::handle_metrics;
    case Op::Export:
        return &Dispatcher::handle_export;
    case Op::Import:
        return &Dispatcher::handle_import;
    }
    return &Dispatcher::handle_ping;
}

void Dispatcher::handle_line(std::string_view line, RequestContext& ctx, std::string& out) {
    if (is_blank_line(line))
        return;
    const std::size_t reply_start = out.size();
    ctx.request = nullptr;
    try {
        if (auto err = parse_request(line, request_)) {
            stats_.errors[static_cast<std::size_t>(err->code)] += 1;
            append_error_reply(out, request_.id_json, err->code, err->message);
            return;
        }
        stats_.requests[static_cast<std::size_t>(request_.op)] += 1;
        ctx.request = &request_;
        const OpSpec& spec = op_spec(request_.op);
        if (spec.level > ctx.level) {
            refuse(request_, ctx, spec, out);
            return;
        }
        if (remote_ && handle_remote(request_, ctx, out))
            return;
        (this->*handler_for(request_.op))(request_, ctx, out);
    } catch (const std::exception& e) {
        // Whatever happened, the client still gets exactly one line.
        out.resize(reply_start);
        ctx.start_watch.reset();
        log_error(std::string("internal error while handling a request: ") + e.what());
        stats_.errors[static_cast<std::size_t>(ErrorCode::InternalError)] += 1;
        append_error_reply(out, request_.id_json, ErrorCode::InternalError, "internal error");
    }
}

void Dispatcher::refuse(const Request& req, const RequestContext& ctx, const OpSpec& spec,
                        std::string& out) {
    stats_.errors[static_cast<std::size_t>(ErrorCode::PermissionDenied)] += 1;
    log_warn("audit: denied " + std::string(spec.name) +
             (req.key.empty() ? "" : " key=" + req.key) + " needs=" +
             std::string(access_level_name(spec.level)) +
             " has=" + std::string(access_level_name(ctx.level)) +
             " uid=" + std::to_string(ctx.peer.uid) + " pid=" + std::to_string(ctx.peer.pid));
    append_error_reply(out, req.id_json, ErrorCode::PermissionDenied,
                       "'" + std::string(spec.name) + "' needs the " +
                           std::string(access_level_name(spec.level)) +
                           " level; this connection (uid " + std::to_string(ctx.peer.uid) +
                           ") has " + std::string(access_level_name(ctx.level)));
}

void Dispatcher::handle_get(const Request& req, RequestContext&, std::string& out) {
    circuit_reply(out, req, store_.get(req.key), stats_);
}

void Dispatcher::handle_success(const Request& req, RequestContext&, std::string& out) {
    circuit_reply(out, req, store_.record_success(req.key), stats_);
}

void Dispatcher::handle_failure(const Request& req, RequestContext&, std::string& out) {
    circuit_reply(out, req, store_.record_failure(req.key), stats_);
}

void Dispatcher::handle_transition(const Request& req, RequestContext& ctx, std::string& out) {
    auto result = store_.transition(req.key, *req.to, {req.expect, req.expect_generation});
    audit(req, ctx.peer, transition_audit_text(req, result.error));
    circuit_reply(out, req, result, stats_);
}

void Dispatcher::handle_reset(const Request& req, RequestContext& ctx, std::string& out) {
    const bool removed = store_.reset(req.key);
    audit(req, ctx.peer, removed ? "removed=true" : "removed=false");
    append_reset_reply(out, req.id_json, removed);
}

void Dispatcher::handle_ping(const Request& req, RequestContext&, std::string& out) {
    append_ping_reply(out, req.id_json);
}

void Dispatcher::handle_acquire(const Request& req, RequestContext&, std::string& out) {
    acquire_reply(out, req, store_.acquire(req.key), stats_);
}

void Dispatcher::handle_report(const Request& req, RequestContext&, std::string& out) {
    report_reply(out, req, store_.report(req.key, req.outcome, req.generation, req.permit),
                 stats_);
}

void Dispatcher::handle_force(const Request& req, RequestContext& ctx, std::string& out) {
    auto r = store_.force(req.key, req.state, req.ttl_ms, req.reason, ctx.peer);
    audit(req, ctx.peer, force_audit_text(req));
    circuit_reply(out, req, r, stats_);
}

void Dispatcher::handle_unforce(const Request& req, RequestContext& ctx, std::string& out) {
    auto r = store_.unforce(req.key);
    audit(req, ctx.peer, r.transition ? "lifted=true" : "lifted=false");
    circuit_reply(out, req, r, stats_);
}

void Dispatcher::handle_configure(const Request& req, RequestContext& ctx, std::string& out) {
    auto r = store_.configure(req.key, req.policy, req.policy_removed, req.policy_clear);
    audit(req, ctx.peer, configure_audit_text(req));
    policy_reply(out, req, r, stats_);
}

void Dispatcher::handle_policy(const Request& req, RequestContext&, std::string& out) {
    policy_reply(out, req, store_.policy(req.key), stats_);
}

} // namespace cbd

namespace cbd {

void Dispatcher::handle_watch(const Request& req, RequestContext& ctx, std::string& out) {
    WatchFilter filter;
    if (!req.key.empty() && req.has_prefix) {
        stats_.errors[static_cast<std::size_t>(ErrorCode::InvalidRequest)] += 1;
        append_error_reply(out, req.id_json, ErrorCode::InvalidRequest,
                           "watch takes 'key' or 'prefix', not both");
        return;
    }
    ReplyWriter w(out, req.id_json, true);
    if (!req.key.empty()) {
        filter = {WatchFilter::Kind::Key, req.key};
        std::string what = "{\"key\":";
        append_json_string(what, req.key);
        w.raw_field("watching", what + "}");
    } else if (req.has_prefix) {
        filter = {WatchFilter::Kind::Prefix, req.prefix};
        std::string what = "{\"prefix\":";
        append_json_string(what, req.prefix);
        w.raw_field("watching", what + "}");
    } else {
        w.string_field("watching", "all");
    }
    w.finish();
    ctx.start_watch = std::move(filter);
}

void Dispatcher::handle_list(const Request& req, RequestContext&, std::string& out) {
    list_reply(out, req, store_.list(ListQuery{req.prefix, req.state_filter, req.limit, req.after}));
}

void Dispatcher::handle_stats(const Request& req, RequestContext&, std::string& out) {
    const auto counts = store_.counts();
    const auto uptime = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - stats_.started);
    auto object = [](auto&& name_of, const auto& values, std::size_t n) {
        std::string o = "{";
        for (std::size_t i = 0; i < n; ++i) {
            if (i)
                o += ',';
            o += '"';
            o += name_of(i);
            o += "\":";
            append_uint(o, values[i]);
        }
        return o + "}";
    };
    ReplyWriter w(out, req.id_json, true);
    w.string_field("version", kVersion)
        .field("protocol", std::int64_t{kProtocolVersion})
        .field("uptimeMs", static_cast<std::int64_t>(uptime.count()))
        .raw_field("connections", "{\"current\":" + std::to_string(stats_.connections_current) +
                                      ",\"total\":" + std::to_string(stats_.connections_total) +
                                      ",\"refused\":" +
                                      std::to_string(stats_.connections_refused) + "}")
        .raw_field("requests", object([](std::size_t i) { return op_spec(static_cast<Op>(i)).name; },
                                      stats_.requests, kOpCount))
        .raw_field("errors",
                   object([](std::size_t i) { return error_code_name(static_cast<ErrorCode>(i)); },
                          stats_.errors, kErrorCodeCount))
        // With the Redis backend this daemon holds no circuits to count.
        .raw_field("circuits", remote_ ? std::string("null")
                                       : "{\"total\":" + std::to_string(counts.total) +
                                             ",\"closed\":" + std::to_string(counts.closed) +
                                             ",\"open\":" + std::to_string(counts.open) +
                                             ",\"halfOpen\":" + std::to_string(counts.half_open) +
                                             ",\"forced\":" + std::to_string(counts.forced) + "}")
        .field("watchers", stats_.watchers)
        .raw_field("events", "{\"emitted\":" + std::to_string(stats_.events_emitted) +
                                 ",\"dropped\":" + std::to_string(stats_.events_dropped) + "}")
        .field("residentMemoryBytes", resident_memory_bytes());
    const StorageStats& st = stats_.storage;
    if (st.mode.empty()) {
        w.raw_field("storage", "null");
    } else {
        nlohmann::json storage = {
            {"mode", st.mode},         {"path", st.path},       {"healthy", st.healthy},
            {"commits", st.commits},   {"failures", st.failures}, {"written", st.written},
            {"undone", st.undone},     {"pending", st.pending},
            {"lastCommitMs", st.last_commit_ms},
            {"lastError", st.last_error.empty() ? nlohmann::json(nullptr)
                                                : nlohmann::json(st.last_error)}};
        w.raw_field("storage", storage.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    }
    const BackendStats& b = stats_.backend;
    if (b.kind.empty()) {
        w.raw_field("backend", "null");
    } else {
        nlohmann::json backend = {
            {"kind", b.kind},
            {"address", b.address},
            {"up", b.up},
            {"disconnects", b.disconnects},
            {"unavailable", b.unavailable},
            {"lastError", b.last_error.empty() ? nlohmann::json(nullptr) : nlohmann::json(b.last_error)}};
        w.raw_field("backend",
                    backend.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    }
    w.finish();
}

std::string Dispatcher::metrics_text(bool per_circuit) {
    MetricsInput in{stats_, store_.counts(), resident_memory_bytes()};
    ListPage page;
    if (per_circuit) {
        page = store_.list(ListQuery{"", std::nullopt, kMaxPerCircuitSeries, ""});
        in.per_circuit = &page.circuits;
        in.per_circuit_truncated = !page.next.empty();
    }
    return render_metrics(in);
}

void Dispatcher::handle_export(const Request& req, RequestContext&, std::string& out) {
    export_reply(out, req, store_.export_page(req.prefix, req.after, req.limit));
}

void Dispatcher::handle_import(const Request& req, RequestContext& ctx, std::string& out) {
    const StoredCircuit record = imported_record(req);
    if (auto error = store_.restore(record)) {
        stats_.errors[static_cast<std::size_t>(*error)] += 1;
        append_error_reply(out, req.id_json, *error,
                           "the daemon holds its maximum number of circuits");
        return;
    }
    audit(req, ctx.peer, import_audit_text(record));
    import_reply(out, req, record);
}

void Dispatcher::handle_metrics(const Request& req, RequestContext&, std::string& out) {
    ReplyWriter(out, req.id_json, true).string_field("text", metrics_text(req.per_circuit)).finish();
}

// --- the Redis backend ------------------------------------------------------------

bool Dispatcher::handle_remote(const Request& req, RequestContext& ctx, std::string& out) {
    RedisScript script;
    std::vector<std::string> args;
    auto generation_arg = [](const std::optional<std::uint64_t>& g) {
        return g ? std::to_string(*g) : std::string();
    };
    switch (req.op) {
    case Op::Get:
        script = RedisScript::Get;
        break;
    case Op::Success:
        script = RedisScript::Success;
        break;
    case Op::Failure:
        script = RedisScript::Failure;
        break;
    case Op::Transition:
        script = RedisScript::Transition;
        args = {std::string(state_name(*req.to)),
                req.expect ? std::string(state_name(*req.expect)) : std::string(),
                generation_arg(req.expect_generation)};
        break;
    case Op::Reset:
        script = RedisScript::Reset;
        break;
    case Op::Acquire:
        script = RedisScript::Acquire;
        break;
    case Op::Report:
        script = RedisScript::Report;
        args = {req.outcome == Outcome::Failure ? "failure" : "success",
                generation_arg(req.generation), req.permit};
        break;
    case Op::Force:
        script = RedisScript::Force;
        args = {std::string(state_name(req.state)), std::to_string(req.ttl_ms), req.reason,
                std::to_string(ctx.peer.uid), std::to_string(ctx.peer.pid)};
        break;
    case Op::Unforce:
        script = RedisScript::Unforce;
        break;
    case Op::Configure:
    case Op::Policy: {
        // One script reads (and for configure first changes) the key's
        // override in Redis: ARGV clear, then per field "" (keep), "-"
        // (remove) or the new value.
        script = RedisScript::Policy;
        const bool configure = req.op == Op::Configure;
        args.push_back(configure && req.policy_clear ? "1" : "0");
        for (std::size_t i = 0; i < kPolicyFieldCount; ++i)
            args.push_back(!configure                  ? std::string()
                           : req.policy.values[i]      ? std::to_string(*req.policy.values[i])
                           : req.policy_removed.values[i] ? std::string("-")
                                                          : std::string());
        break;
    }
    case Op::List:
        script = RedisScript::List;
        args = {req.prefix, req.after, std::to_string(req.limit),
                req.state_filter ? std::string(state_name(*req.state_filter)) : std::string()};
        break;
    case Op::Export:
        script = RedisScript::Export;
        args = {req.prefix, req.after, std::to_string(req.limit)};
        break;
    case Op::Import:
        script = RedisScript::Import;
        args.push_back(req.snapshot ? "1" : "0");
        if (req.snapshot) {
            const Snapshot& sn = *req.snapshot;
            args.insert(args.end(),
                        {std::string(state_name(sn.state)), std::to_string(sn.failure_count),
                         std::to_string(sn.success_count), std::to_string(sn.last_failure_time),
                         std::to_string(sn.last_state_change), std::to_string(*req.generation)});
            if (const auto& pin = req.forced)
                args.insert(args.end(),
                            {std::string(state_name(pin->state)), std::to_string(pin->until),
                             pin->reason, std::to_string(pin->uid), std::to_string(pin->pid)});
            else
                args.insert(args.end(), 5, std::string());
        } else {
            args.insert(args.end(), 11, std::string());
        }
        for (std::size_t i = 0; i < kPolicyFieldCount; ++i)
            args.push_back(req.policy.values[i] ? std::to_string(*req.policy.values[i])
                                                : std::string());
        break;
    default:
        return false; // answered here, from this daemon (ping, policy, stats, watch...)
    }
    if (!ctx.deferral) {
        stats_.errors[static_cast<std::size_t>(ErrorCode::InternalError)] += 1;
        append_error_reply(out, req.id_json, ErrorCode::InternalError,
                           "this connection cannot wait for the backend");
        return true;
    }
    auto slot = ctx.deferral->take_slot();
    const Policy policy = store_.policy(req.key).resolved.policy;
    remote_->run(script, req.key, policy, args,
                 [this, slot, req, peer = ctx.peer](RemoteResult r) {
                     remote_reply(req, peer, r, slot->text);
                     slot->complete();
                 });
    return true;
}

void Dispatcher::remote_reply(const Request& req, const Peer& peer, const RemoteResult& r,
                              std::string& out) {
    if (r.error == ErrorCode::BackendUnavailable) {
        stats_.errors[static_cast<std::size_t>(ErrorCode::BackendUnavailable)] += 1;
        append_error_reply(out, req.id_json, ErrorCode::BackendUnavailable,
                           "the Redis backend is unavailable: " + r.unavailable_reason);
        return;
    }
    if (r.error == ErrorCode::TooManyCircuits) {
        stats_.errors[static_cast<std::size_t>(ErrorCode::TooManyCircuits)] += 1;
        append_error_reply(out, req.id_json, ErrorCode::TooManyCircuits,
                           "the shared store holds its maximum number of circuits");
        return;
    }
    switch (req.op) {
    case Op::List:
        list_reply(out, req, r.page);
        return;
    case Op::Export:
        export_reply(out, req, r.exported);
        return;
    case Op::Import: {
        const StoredCircuit record = imported_record(req);
        audit(req, peer, import_audit_text(record));
        import_reply(out, req, record);
        return;
    }
    case Op::Configure:
    case Op::Policy: {
        // The daemon's layers, then the key's own from Redis.
        PolicyResult p{std::nullopt, store_.policy(req.key).resolved};
        for (std::size_t i = 0; i < kPolicyFieldCount; ++i)
            if (const auto& v = r.policy_override.values[i]) {
                p.resolved.policy.set(static_cast<PolicyField>(i), *v);
                p.resolved.sources[i] = PolicySource::Key;
            }
        if (req.op == Op::Configure)
            audit(req, peer, configure_audit_text(req));
        policy_reply(out, req, p, stats_);
        return;
    }
    case Op::Reset:
        audit(req, peer, r.extra1 ? "removed=true" : "removed=false");
        append_reset_reply(out, req.id_json, r.extra1 != 0);
        return;
    case Op::Acquire:
        acquire_reply(out, req,
                      AcquireResult{r.error, r.extra1 != 0, r.extra3, r.extra2, r.circuit,
                                    r.transition},
                      stats_);
        return;
    case Op::Report:
        report_reply(out, req, ReportResult{r.error, r.stale, r.circuit, r.transition}, stats_);
        return;
    case Op::Transition:
        audit(req, peer, transition_audit_text(req, r.error));
        break;
    case Op::Force:
        audit(req, peer, force_audit_text(req));
        break;
    case Op::Unforce:
        audit(req, peer, r.transition ? "lifted=true" : "lifted=false");
        break;
    default:
        break; // get, success, failure
    }
    circuit_reply(out, req, StoreResult{r.error, r.circuit, r.transition}, stats_);
}

} // namespace cbd
