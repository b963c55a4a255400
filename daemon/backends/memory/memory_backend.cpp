// MemoryBackend (see memory_backend.hpp).
#include "daemon/backends/memory/memory_backend.hpp"

#include <utility>

namespace cbd {

namespace {

void take(OpOutcome& out, StoreResult r) {
    out.error = r.error;
    out.circuit = std::move(r.circuit);
    out.transition = r.transition;
}

} // namespace

namespace {

// The store answers codes; these say why where the code alone does not.
void explain(OpOutcome& now) {
    if (!now.error || !now.error_message.empty())
        return;
    if (*now.error == ErrorCode::BackendError)
        now.error_message = "no generation is left for this change (the counter is at "
                            "2^53-1, as an import or a state file left it); nothing was changed";
    else if (*now.error == ErrorCode::InvalidRequest)
        now.error_message = "the record holds a number out of range";
}

} // namespace

void MemoryBackend::apply(const Request& req, const Peer& peer, OpOutcome& now) {
    apply_to_store(req, peer, now);
    explain(now);
}

void MemoryBackend::apply_to_store(const Request& req, const Peer& peer, OpOutcome& now) {
    switch (req.op) {
    case Op::Get:
        take(now, req.create_unknown ? store_.get(req.key) : store_.peek(req.key));
        return;
    case Op::Success:
        take(now, store_.record_success(req.key));
        return;
    case Op::Failure:
        take(now, store_.record_failure(req.key));
        return;
    case Op::Transition:
        take(now, store_.transition(req.key, *req.to, {req.expect, req.expect_generation}));
        return;
    case Op::Reset:
        now.removed = store_.reset(req.key);
        return;
    case Op::Acquire: {
        auto r = store_.acquire(req.key);
        now.error = r.error;
        now.allowed = r.allowed;
        now.retry_after_ms = r.retry_after_ms;
        now.permit = std::move(r.permit);
        now.circuit = std::move(r.circuit);
        now.transition = r.transition;
        return;
    }
    case Op::Report: {
        auto r = store_.report(req.key, req.outcome, req.generation, req.permit, req.duration_ms);
        now.error = r.error;
        now.stale = r.stale;
        now.circuit = std::move(r.circuit);
        now.transition = r.transition;
        return;
    }
    case Op::Force:
        take(now, store_.force(req.key, req.state, req.ttl_ms, req.reason, peer));
        return;
    case Op::Unforce:
        take(now, store_.unforce(req.key));
        return;
    case Op::Configure: {
        auto r = store_.configure(req.key, req.policy, req.policy_removed, req.policy_clear);
        now.error = r.error;
        now.error_message = std::move(r.message);
        now.policy = std::move(r.resolved);
        return;
    }
    case Op::Policy:
        now.policy = store_.policy(req.key).resolved;
        return;
    case Op::List:
        now.page = store_.list(ListQuery{req.prefix, req.state_filter, req.limit, req.after});
        return;
    case Op::Export:
        now.exported = store_.export_page(req.prefix, req.after, req.limit);
        return;
    case Op::Import:
        now.error = store_.restore(imported_record(req));
        return;
    case Op::Ping:
    case Op::Watch:
    case Op::Stats:
    case Op::Metrics:
    case Op::ReportBatch: // the dispatcher runs each entry as a report
        break;
    }
    now.error = ErrorCode::InternalError;
    now.error_message = "not a circuit operation";
}

bool MemoryBackend::run(const Request& req, const Peer& peer, OpOutcome& now, Deferral&) {
    apply(req, peer, now);
    return true;
}

bool MemoryBackend::list_now(const ListQuery& query, ListPage& page) {
    page = store_.list(query);
    return true;
}

void MemoryBackend::set_policy_config(PolicyConfig config) {
    store_.set_policy_config(std::move(config));
}

} // namespace cbd
