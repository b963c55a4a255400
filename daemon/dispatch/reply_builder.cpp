// Replies to circuit operations (see reply_builder.hpp).
#include "daemon/dispatch/reply_builder.hpp"

#include "common/reply.hpp"
#include "daemon/dispatch/circuit_json.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <type_traits>
#include <utility>
#include <variant>

namespace cbd {

namespace {

// The message of an error the backend gave no message for. `op` names the
// limit a TooManyCircuits reached: configure adds key policies, every other
// operation circuits.
std::string error_message(ErrorCode code, Op op, const CircuitView& v) {
    switch (code) {
    case ErrorCode::TooManyCircuits:
        return op == Op::Configure ? "the daemon holds its maximum number of key policies"
                                   : "the daemon holds its maximum number of circuits";
    case ErrorCode::Conflict:
        return "the circuit is " + std::string(state_name(v.snapshot.state)) + " at generation " +
               std::to_string(v.generation) + "; the expectation did not hold";
    case ErrorCode::Forced:
        return "the circuit is forced " + std::string(v.forced ? state_name(v.forced->state) : "") +
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
    w.error(code, error_message(code, req.op, v));
    if (code == ErrorCode::Conflict || code == ErrorCode::Forced || code == ErrorCode::NoPermit)
        circuit_fields(w, v);
    w.finish();
}

// A circuit operation's reply: the circuit's refusal, or the operation's
// own fields (`own_fields`), the circuit and the transition it made.
template <typename Result, typename OwnFields>
void circuit_reply(std::string& out, const Request& req, const Result& r, OwnFields own_fields) {
    if (r.error) {
        circuit_error(out, req, *r.error, r.circuit);
        return;
    }
    ReplyWriter w(out, req.id_json, true);
    own_fields(w);
    circuit_fields(w, r.circuit);
    if (r.transition)
        w.raw_field("transition", transition_json(*r.transition));
    w.finish();
}

// A page of `list` or `export`: its entries, and the key the next page
// starts after.
template <typename Page, typename AppendEntry>
void page_reply(std::string& out, const Request& req, const Page& page, AppendEntry append_entry) {
    std::string circuits = "[";
    for (const auto& entry : page.circuits) {
        if (circuits.size() > 1)
            circuits += ',';
        append_entry(circuits, entry);
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

void import_reply(std::string& out, const Request& req, const StoredCircuit& record) {
    ReplyWriter w(out, req.id_json, true);
    w.string_field("key", req.key);
    if (record.circuit)
        circuit_fields(w, *record.circuit);
    w.finish();
}

void policy_reply(std::string& out, const Request& req, const ResolvedPolicy& resolved) {
    std::string sources = "{";
    for (std::size_t i = 0; i < kPolicyFieldCount; ++i) {
        if (i)
            sources += ',';
        sources += '"';
        sources += kPolicyFieldNames[i];
        sources += "\":\"";
        sources += policy_source_name(resolved.sources[i]);
        sources += '"';
    }
    sources += '}';
    ReplyWriter w(out, req.id_json, true);
    w.string_field("key", req.key)
        .raw_field("policy", policy_json(resolved.policy))
        .raw_field("source", sources);
    if (resolved.prefix.empty())
        w.raw_field("prefix", "null");
    else
        w.string_field("prefix", resolved.prefix);
    w.finish();
}

// The message of an entry's error: the backend's own when it has one, else
// the one its report would have had.
std::string entry_error_message(const OpOutcome& r, ErrorCode code) {
    if (!r.error_message.empty())
        return r.error_message;
    const auto* report = std::get_if<ReportResult>(&r.result);
    return error_message(code, Op::Report, report ? report->circuit : CircuitView{});
}

} // namespace

void append_outcome_reply(std::string& out, const Request& req, const OpOutcome& r) {
    const std::optional<ErrorCode> error = r.error();
    if (error && *error != ErrorCode::Conflict && *error != ErrorCode::Forced &&
        *error != ErrorCode::NoPermit) {
        // Errors about the operation as a whole, not the circuit's state.
        const ErrorCode code = *error;
        std::string message = r.error_message;
        if (message.empty())
            message = error_message(code, req.op, CircuitView{});
        append_error_reply(out, req.id_json, code, message, r.surely_not_applied());
        return;
    }
    std::visit(
        [&](const auto& result) {
            using Result = std::decay_t<decltype(result)>;
            if constexpr (std::is_same_v<Result, StoreResult>) {
                circuit_reply(out, req, result, [](ReplyWriter&) {});
            } else if constexpr (std::is_same_v<Result, AcquireResult>) {
                circuit_reply(out, req, result, [&](ReplyWriter& w) {
                    w.field("allowed", result.allowed);
                    if (result.allowed && !result.permit.empty())
                        w.string_field("permit", result.permit);
                    if (!result.allowed)
                        w.field("retryAfterMs", result.retry_after_ms);
                });
            } else if constexpr (std::is_same_v<Result, ReportResult>) {
                circuit_reply(out, req, result, [&](ReplyWriter& w) {
                    if (result.stale)
                        w.field("stale", true);
                });
            } else if constexpr (std::is_same_v<Result, ResetResult>)
                append_reset_reply(out, req.id_json, result.removed);
            else if constexpr (std::is_same_v<Result, PolicyResult>)
                policy_reply(out, req, result.resolved);
            else if constexpr (std::is_same_v<Result, ListPage>)
                page_reply(out, req, result, [](std::string& json, const ListEntry& e) {
                    append_list_entry(json, e.key, e.circuit);
                });
            else if constexpr (std::is_same_v<Result, ExportPage>)
                page_reply(out, req, result, append_stored_circuit);
            else if constexpr (std::is_same_v<Result, std::monostate>)
                import_reply(out, req, imported_record(req));
            else
                static_assert(std::is_same_v<Result, OpFailure>); // has an error: answered above
        },
        r.result);
}

void BatchSummary::count(std::size_t index, const OpOutcome& r) {
    const auto* report = std::get_if<ReportResult>(&r.result);
    if (const auto error = r.error())
        errors.push_back({index, *error, entry_error_message(r, *error), r.surely_not_applied()});
    else if (report && report->stale)
        stale += 1;
    else
        applied += 1;
}

void append_batch_reply(std::string& out, std::string_view id_json, BatchSummary& summary) {
    std::sort(summary.errors.begin(), summary.errors.end(),
              [](const auto& a, const auto& b) { return a.index < b.index; });
    std::string errors = "[";
    for (const auto& e : summary.errors) {
        if (errors.size() > 1)
            errors += ',';
        errors += "{\"index\":";
        append_uint(errors, e.index);
        errors += ",\"code\":";
        append_json_string(errors, error_code_name(e.code));
        errors += ",\"message\":";
        append_json_string(errors, e.message);
        if (e.surely_not_applied)
            errors += ",\"applied\":false";
        errors += '}';
    }
    errors += ']';
    ReplyWriter w(out, id_json, true);
    w.field("applied", summary.applied).field("stale", summary.stale).raw_field("errors", errors);
    w.finish();
}

void append_reset_reply(std::string& out, std::string_view id_json, bool removed) {
    ReplyWriter(out, id_json, true).field("removed", removed).finish();
}

void append_ping_reply(std::string& out, std::string_view id_json) {
    ReplyWriter(out, id_json, true)
        .string_field("version", kVersion)
        .field("protocol", std::int64_t{kProtocolVersion})
        .finish();
}

void append_permission_denied_reply(std::string& out, std::string_view id_json, const OpSpec& spec,
                                    AccessLevel has, uid_t uid) {
    append_error_reply(out, id_json, ErrorCode::PermissionDenied,
                       "'" + std::string(spec.name) + "' needs the " +
                           std::string(access_level_name(spec.level)) +
                           " level; this connection (uid " + std::to_string(uid) + ") has " +
                           std::string(access_level_name(has)));
}

void append_watch_reply(std::string& out, std::string_view id_json, const WatchFilter& filter) {
    ReplyWriter w(out, id_json, true);
    std::string what;
    switch (filter.kind) {
    case WatchFilter::Kind::Keys:
        w.raw_field("watching", "{\"keys\":" + std::to_string(filter.keys->size()) + "}");
        break;
    case WatchFilter::Kind::Key:
        what = "{\"key\":";
        append_json_string(what, filter.value);
        w.raw_field("watching", what + "}");
        break;
    case WatchFilter::Kind::Prefix:
        what = "{\"prefix\":";
        append_json_string(what, filter.value);
        w.raw_field("watching", what + "}");
        break;
    case WatchFilter::Kind::All:
        w.string_field("watching", "all");
        break;
    }
    w.finish();
}

void append_stats_reply(std::string& out, std::string_view id_json, const DaemonStats& stats,
                        const std::optional<CircuitCounts>& counts, std::int64_t uptime_ms,
                        std::uint64_t resident_bytes) {
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
    ReplyWriter w(out, id_json, true);
    w.string_field("version", kVersion)
        .field("protocol", std::int64_t{kProtocolVersion})
        .field("uptimeMs", uptime_ms)
        .raw_field("connections", "{\"current\":" + std::to_string(stats.connections_current) +
                                      ",\"total\":" + std::to_string(stats.connections_total) +
                                      ",\"refused\":" + std::to_string(stats.connections_refused) +
                                      "}")
        .raw_field("requests",
                   object([](std::size_t i) { return op_spec(static_cast<Op>(i)).name; },
                          stats.requests, kOpCount))
        .raw_field("errors",
                   object([](std::size_t i) { return error_code_name(static_cast<ErrorCode>(i)); },
                          stats.errors, kErrorCodeCount))
        // null until a backend that counts elsewhere (Redis) has a count.
        .raw_field("circuits", !counts ? std::string("null")
                                       : "{\"total\":" + std::to_string(counts->total) +
                                             ",\"closed\":" + std::to_string(counts->closed) +
                                             ",\"open\":" + std::to_string(counts->open) +
                                             ",\"halfOpen\":" + std::to_string(counts->half_open) +
                                             ",\"forced\":" + std::to_string(counts->forced) + "}")
        .field("watchers", stats.watchers)
        .raw_field("events", "{\"emitted\":" + std::to_string(stats.events_emitted) +
                                 ",\"dropped\":" + std::to_string(stats.events_dropped) + "}")
        .field("residentMemoryBytes", resident_bytes);
    // Each backend section writes its own fields (StatsSection); absent: null.
    for (const auto& [name, section] :
         {std::pair{"storage", stats.storage}, std::pair{"backend", stats.backend}}) {
        if (!section) {
            w.raw_field(name, "null");
            continue;
        }
        nlohmann::json fields = nlohmann::json::object();
        section->write_json(fields);
        w.raw_field(name, fields.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    }
    w.finish();
}

void append_metrics_reply(std::string& out, std::string_view id_json, const std::string& text) {
    ReplyWriter(out, id_json, true).string_field("text", text).finish();
}

} // namespace cbd
