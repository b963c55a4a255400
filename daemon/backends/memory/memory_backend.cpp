// MemoryBackend (see memory_backend.hpp).
#include "daemon/backends/memory/memory_backend.hpp"

#include <utility>

namespace cbd {

namespace {

// The store answers codes; these say why where the code alone does not.
void explain(OpOutcome& now) {
    if (!now.error_message.empty())
        return;
    const auto error = now.error();
    if (error == ErrorCode::BackendError)
        now.error_message = "no generation is left for this change (the counter is at "
                            "2^53-1, as an import or a state file left it); nothing was changed";
    else if (error == ErrorCode::InvalidRequest)
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
        now.result = req.create_unknown ? store_.get(req.key) : store_.peek(req.key);
        return;
    case Op::Success:
        now.result = store_.record_success(req.key);
        return;
    case Op::Failure:
        now.result = store_.record_failure(req.key);
        return;
    case Op::Transition:
        now.result = store_.transition(req.key, *req.to, {req.expect, req.expect_generation});
        return;
    case Op::Reset:
        now.result = store_.reset(req.key);
        return;
    case Op::Acquire:
        now.result = store_.acquire(req.key);
        return;
    case Op::Report:
        now.result =
            store_.report(req.key, req.outcome, req.generation, req.permit, req.duration_ms);
        return;
    case Op::Force:
        now.result = store_.force(req.key, req.state, req.ttl_ms, req.reason, peer);
        return;
    case Op::Unforce:
        now.result = store_.unforce(req.key);
        return;
    case Op::Configure: {
        auto r = store_.configure(req.key, req.policy, req.policy_removed, req.policy_clear);
        if (r.error)
            now.fail(*r.error, r.message); // the reply says which field, and why
        else
            now.result = std::move(r);
        return;
    }
    case Op::Policy:
        now.result = store_.policy(req.key);
        return;
    case Op::List:
        now.result = store_.list(ListQuery{req.prefix, req.state_filter, req.limit, req.after});
        return;
    case Op::Export:
        now.result = store_.export_page(req.prefix, req.after, req.limit);
        return;
    case Op::Import:
        if (const auto error = store_.restore(imported_record(req)))
            now.fail(*error);
        else
            now.result = std::monostate{};
        return;
    case Op::Ping:
    case Op::Watch:
    case Op::Stats:
    case Op::Metrics:
    case Op::ReportBatch: // the dispatcher runs each entry as a report
        break;
    }
    now.fail(ErrorCode::InternalError, "not a circuit operation");
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
