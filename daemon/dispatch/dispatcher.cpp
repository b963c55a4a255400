// Dispatcher (see dispatcher.hpp).
#include "daemon/dispatch/dispatcher.hpp"

#include "common/reply.hpp"
#include "daemon/core/log.hpp"
#include "daemon/dispatch/metrics.hpp"
#include "daemon/dispatch/reply_builder.hpp"

#include <exception>
#include <utility>
#include <variant>

namespace cbd {

namespace {

void audit(const Request& req, const Peer& peer, std::string_view what) {
    if (!log_enabled(LogLevel::Info))
        return;
    // Keys and reasons hold no control characters (validated), so a log
    // line stays one line.
    log_info("audit: " + std::string(op_spec(req.op).name) + " key=" + req.key + " " +
             std::string(what) + " uid=" + std::to_string(peer.uid) +
             " pid=" + std::to_string(peer.pid));
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

std::string import_audit_text(const StoredCircuit& record) {
    return record.circuit ? "state=" + std::string(state_name(record.circuit->snapshot.state)) +
                                " generation=" + std::to_string(record.circuit->generation)
                          : std::string("policy only");
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

// One reportBatch in progress. Its entries answer now or later, in any
// order (each is a backend operation); the one reply is written when the
// last has answered and every entry has been handed to the backend.
struct BatchTally {
    std::string id_json;
    std::size_t entries = 0;
    std::size_t outstanding = 0; // entries whose answer is still to come
    bool dispatched = false;     // every entry has been handed to the backend
    BatchSummary summary;
    std::vector<bool> answered; // by entry
    bool abandoned = false;     // answered internal_error as a whole
    std::shared_ptr<ReplyQueue> replies;
    std::optional<ReplyQueue::Ticket> ticket; // taken at the first entry that answers later

    bool done() const { return dispatched && outstanding == 0; }
};

} // namespace

Dispatcher::Dispatcher(CircuitBackend& backend, DaemonStats& stats)
    : backend_(backend), stats_(stats) {}

Dispatcher::Handler Dispatcher::handler_for(Op op) {
    // The daemon's own ops; every other op is a circuit operation and goes
    // to the backend (nullptr here). A switch, so that an op without a
    // decision does not compile (-Wswitch).
    switch (op) {
    case Op::Ping:
        return &Dispatcher::handle_ping;
    case Op::Watch:
        return &Dispatcher::handle_watch;
    case Op::Stats:
        return &Dispatcher::handle_stats;
    case Op::Metrics:
        return &Dispatcher::handle_metrics;
    case Op::Get:
    case Op::Success:
    case Op::Failure:
    case Op::Transition:
    case Op::Reset:
    case Op::Acquire:
    case Op::Report:
    case Op::Force:
    case Op::Unforce:
    case Op::Configure:
    case Op::Policy:
    case Op::List:
    case Op::Export:
    case Op::Import:
    case Op::ReportBatch: // run_report_batch()
        break;
    }
    return nullptr;
}

void Dispatcher::handle_line(std::string_view line, RequestContext& ctx, std::string& out) {
    // One queue for every such call: these callers answer at once, so it is
    // empty again by the end of each.
    if (!scratch_replies_)
        scratch_replies_ = std::make_shared<ReplyQueue>();
    auto replies = std::exchange(ctx.replies, scratch_replies_);
    handle_line(line, ctx);
    ctx.replies->take_ready(out);
    if (!ctx.replies->empty()) {
        // A backend that answers later has nowhere to go here.
        log_error("a reply was deferred on a connection that cannot wait for it");
        append_error_reply(out, request_.id_json, ErrorCode::InternalError,
                           "this connection cannot wait for the backend");
        scratch_replies_.reset(); // its late answer fills a queue nobody reads
    }
    ctx.replies = std::move(replies);
}

void Dispatcher::handle_line(std::string_view line, RequestContext& ctx) {
    ctx.operations = 0;
    if (is_blank_line(line))
        return;
    ctx.operations = 1;
    std::string& out = ctx.replies->ready_tail();
    const std::size_t reply_start = out.size();
    try {
        if (auto err = parse_request(line, request_)) {
            stats_.errors[static_cast<std::size_t>(err->code)] += 1;
            append_error_reply(out, request_.id_json, err->code, err->message);
            return;
        }
        stats_.requests[static_cast<std::size_t>(request_.op)] += 1;
        const OpSpec& spec = op_spec(request_.op);
        if (spec.level > ctx.level) {
            refuse(request_, ctx, spec, out);
            return;
        }
        request_.create_unknown = ctx.level != AccessLevel::Read;
        if (Handler handler = handler_for(request_.op)) {
            (this->*handler)(request_, ctx, out);
            return;
        }
        if (request_.op == Op::ReportBatch)
            run_report_batch(request_, ctx);
        else
            run_circuit_op(request_, ctx);
    } catch (const std::exception& e) {
        // Whatever happened, the client still gets exactly one line (a
        // backend that threw took no slot: it answers or throws, not both).
        std::string& tail = ctx.replies->ready_tail();
        if (&tail == &out)
            out.resize(reply_start);
        ctx.start_watch.reset();
        log_error(std::string("internal error while handling a request: ") + e.what());
        stats_.errors[static_cast<std::size_t>(ErrorCode::InternalError)] += 1;
        append_error_reply(tail, request_.id_json, ErrorCode::InternalError, "internal error");
    }
}

void Dispatcher::run_circuit_op(const Request& req, RequestContext& ctx) {
    // Where an answer that comes later goes: a slot reserved now, in request
    // order, filled by the completion. Only a backend that defers asks.
    struct SlotDeferral final : Deferral {
        Dispatcher& d;
        const Request& req;
        RequestContext& ctx;
        std::optional<ReplyQueue::Ticket> taken;
        SlotDeferral(Dispatcher& dd, const Request& r, RequestContext& c) : d(dd), req(r), ctx(c) {}
        Completion later() override {
            const auto ticket = ctx.replies->reserve();
            taken = ticket;
            return
                [&dispatcher = d, replies = ctx.replies, ticket,
                 held = std::make_shared<const Request>(req), peer = ctx.peer](const OpOutcome& r) {
                    std::string text;
                    dispatcher.reply_for(*held, peer, r, text);
                    replies->fill(ticket, std::move(text));
                };
        }
    } deferral(*this, req, ctx);
    outcome_.clear();
    try {
        if (backend_.run(req, ctx.peer, outcome_, deferral))
            reply_for(req, ctx.peer, outcome_, ctx.replies->ready_tail());
    } catch (const std::exception& e) {
        if (!deferral.taken)
            throw; // handle_line() answers internal_error in the ready tail
        // The backend took a slot and then failed: answer in the slot, so the
        // connection's later replies are not stuck behind it forever.
        log_error(std::string("internal error while handling a request: ") + e.what());
        stats_.errors[static_cast<std::size_t>(ErrorCode::InternalError)] += 1;
        std::string text;
        append_error_reply(text, req.id_json, ErrorCode::InternalError, "internal error");
        ctx.replies->fill(*deferral.taken, std::move(text));
    }
}

void Dispatcher::run_report_batch(const Request& req, RequestContext& ctx) {
    ctx.operations = req.reports.size();
    auto tally = std::make_shared<BatchTally>();
    tally->id_json = req.id_json;
    tally->entries = req.reports.size();
    tally->answered.assign(req.reports.size(), false);
    tally->replies = ctx.replies;
    // Where entries that answer later go: the batch's one slot, reserved at
    // the first of them (so it sits behind every earlier reply) and weighed
    // by the entries, so a connection's batches count against its bound on
    // operations waiting for the backend as the same reports would.
    struct EntryDeferral final : Deferral {
        std::shared_ptr<BatchTally> tally;
        std::size_t index = 0;
        bool taken = false;
        explicit EntryDeferral(std::shared_ptr<BatchTally> t) : tally(std::move(t)) {}
        Completion later() override {
            if (!tally->ticket)
                tally->ticket = tally->replies->reserve(tally->entries);
            tally->outstanding += 1;
            taken = true;
            return [tally = tally, index = index](const OpOutcome& r) {
                // An entry answers once: a backend that answered and then
                // threw has had its entry answered for it (and the other way
                // round), and a batch given up answers nothing more.
                if (tally->abandoned || tally->answered[index])
                    return;
                tally->answered[index] = true;
                tally->outstanding -= 1;
                tally->summary.count(index, r);
                if (tally->done()) {
                    std::string text;
                    append_batch_reply(text, tally->id_json, tally->summary);
                    tally->replies->fill(*tally->ticket, std::move(text));
                }
            };
        }
    } deferral(tally);

    try {
        Request entry;
        entry.op = Op::Report;
        entry.create_unknown = true; // reportBatch is write level
        for (std::size_t i = 0; i < req.reports.size(); ++i) {
            const BatchReport& report = req.reports[i];
            outcome_.clear();
            if (report.error) {
                outcome_.fail(report.error->code, report.error->message);
                tally->answered[i] = true;
                tally->summary.count(i, outcome_);
                continue;
            }
            entry.key = report.key;
            entry.outcome = report.outcome;
            entry.generation = report.generation;
            entry.permit = report.permit;
            entry.duration_ms = report.duration_ms;
            deferral.index = i;
            deferral.taken = false;
            try {
                if (backend_.run(entry, ctx.peer, outcome_, deferral)) {
                    tally->answered[i] = true;
                    tally->summary.count(i, outcome_);
                }
            } catch (const std::exception& e) {
                // One entry failed inside the backend: it answers
                // internal_error, unless its completion already answered,
                // and the others go on.
                log_error(std::string("internal error while handling a batch report: ") + e.what());
                if (!tally->answered[i]) {
                    tally->answered[i] = true;
                    if (deferral.taken)
                        tally->outstanding -= 1;
                    outcome_.fail(ErrorCode::InternalError, "internal error");
                    tally->summary.count(i, outcome_);
                }
            }
        }
        tally->dispatched = true;
        if (!tally->done())
            return;
        std::string text;
        append_batch_reply(text, tally->id_json, tally->summary);
        if (tally->ticket)
            ctx.replies->fill(*tally->ticket, std::move(text));
        else
            ctx.replies->ready_tail() += text;
    } catch (const std::exception& e) {
        if (!tally->ticket)
            throw; // nothing reserved: handle_line() answers in the ready tail
        // The batch's slot is taken: answer there, or every later reply on
        // the connection would wait behind it forever.
        tally->abandoned = true;
        log_error(std::string("internal error while handling a request: ") + e.what());
        stats_.errors[static_cast<std::size_t>(ErrorCode::InternalError)] += 1;
        std::string text;
        append_error_reply(text, req.id_json, ErrorCode::InternalError, "internal error");
        ctx.replies->fill(*tally->ticket, std::move(text));
    }
}

void Dispatcher::reply_for(const Request& req, const Peer& peer, const OpOutcome& r,
                           std::string& out) {
    const std::optional<ErrorCode> error = r.error();
    // Audit lines of operator actions, whether or not the backend agreed.
    switch (req.op) {
    case Op::Transition:
        audit(req, peer, transition_audit_text(req, error));
        break;
    case Op::Force:
        audit(req, peer,
              force_audit_text(req) +
                  (error ? " refused=" + std::string(error_code_name(*error)) : ""));
        break;
    case Op::Unforce: {
        const auto* unforced = std::get_if<StoreResult>(&r.result);
        audit(req, peer, unforced && unforced->transition ? "lifted=true" : "lifted=false");
        break;
    }
    case Op::Reset:
        if (const auto* reset = std::get_if<ResetResult>(&r.result))
            audit(req, peer, reset->removed ? "removed=true" : "removed=false");
        break;
    case Op::Configure:
        if (!error)
            audit(req, peer, configure_audit_text(req));
        break;
    case Op::Import:
        if (!error)
            audit(req, peer, import_audit_text(imported_record(req)));
        break;
    default:
        break;
    }
    if (error)
        stats_.errors[static_cast<std::size_t>(*error)] += 1;
    append_outcome_reply(out, req, r);
}

void Dispatcher::refuse(const Request& req, const RequestContext& ctx, const OpSpec& spec,
                        std::string& out) {
    stats_.errors[static_cast<std::size_t>(ErrorCode::PermissionDenied)] += 1;
    log_warn("audit: denied " + std::string(spec.name) +
             (req.key.empty() ? "" : " key=" + req.key) +
             " needs=" + std::string(access_level_name(spec.level)) +
             " has=" + std::string(access_level_name(ctx.level)) +
             " uid=" + std::to_string(ctx.peer.uid) + " pid=" + std::to_string(ctx.peer.pid));
    append_permission_denied_reply(out, req.id_json, spec, ctx.level, ctx.peer.uid);
}

void Dispatcher::handle_ping(const Request& req, RequestContext&, std::string& out) {
    append_ping_reply(out, req.id_json);
}

void Dispatcher::handle_watch(const Request& req, RequestContext& ctx, std::string& out) {
    WatchFilter filter; // parse_request() let through one of key, prefix, keys at most
    if (!req.watch_keys.empty()) {
        filter.kind = WatchFilter::Kind::Keys;
        filter.keys = std::make_shared<const std::vector<std::string>>(req.watch_keys);
    } else if (!req.key.empty()) {
        filter = {WatchFilter::Kind::Key, req.key, nullptr};
    } else if (req.has_prefix) {
        filter = {WatchFilter::Kind::Prefix, req.prefix, nullptr};
    }
    append_watch_reply(out, req.id_json, filter);
    ctx.start_watch = std::move(filter);
}

void Dispatcher::handle_stats(const Request& req, RequestContext&, std::string& out) {
    const auto uptime = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - stats_.started);
    append_stats_reply(out, req.id_json, stats_, backend_.counts(),
                       static_cast<std::int64_t>(uptime.count()), resident_memory_bytes());
}

std::string Dispatcher::metrics_text(bool per_circuit) {
    const auto counts = backend_.counts();
    MetricsInput in{stats_, counts.value_or(CircuitCounts{}), resident_memory_bytes()};
    in.circuits_known = counts.has_value();
    ListPage page;
    if (per_circuit &&
        backend_.list_now(ListQuery{"", std::nullopt, kMaxPerCircuitSeries, ""}, page)) {
        in.per_circuit = &page.circuits;
        in.per_circuit_truncated = !page.next.empty();
    }
    return render_metrics(in);
}

void Dispatcher::handle_metrics(const Request& req, RequestContext&, std::string& out) {
    append_metrics_reply(out, req.id_json, metrics_text(req.per_circuit));
}

} // namespace cbd
