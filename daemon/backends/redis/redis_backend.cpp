// RedisBackend (see redis_backend.hpp).
#include "daemon/backends/redis/redis_backend.hpp"

#include "daemon/breaker/policy_digest.hpp"

namespace cbd {

namespace {

std::string generation_arg(const std::optional<std::uint64_t>& g) {
    return g ? std::to_string(*g) : std::string();
}

// The script for `req` and its own arguments (docs/REDIS.md has each
// script's ARGV). False for an op that is not a circuit operation.
bool script_call(const Request& req, const Peer& peer, RedisFunction& script,
                 std::vector<std::string>& args) {
    switch (req.op) {
    case Op::Get:
        script = RedisFunction::Get;
        args = {req.create_unknown ? std::string(kRedisArgTrue) : "0"};
        return true;
    case Op::Success:
        script = RedisFunction::Success;
        return true;
    case Op::Failure:
        script = RedisFunction::Failure;
        return true;
    case Op::Transition:
        script = RedisFunction::Transition;
        args = {std::string(state_name(*req.to)),
                req.expect ? std::string(state_name(*req.expect)) : std::string(),
                generation_arg(req.expect_generation)};
        return true;
    case Op::Reset:
        script = RedisFunction::Reset;
        return true;
    case Op::Acquire:
        script = RedisFunction::Acquire;
        return true;
    case Op::Report:
        script = RedisFunction::Report;
        args = {std::string(outcome_name(req.outcome)), generation_arg(req.generation), req.permit,
                req.duration_ms ? std::to_string(*req.duration_ms) : std::string()};
        return true;
    case Op::Force:
        script = RedisFunction::Force;
        args = {std::string(state_name(req.state)), std::to_string(req.ttl_ms), req.reason,
                std::to_string(peer.uid), std::to_string(peer.pid)};
        return true;
    case Op::Unforce:
        script = RedisFunction::Unforce;
        return true;
    case Op::Configure:
    case Op::Policy: {
        // One script reads (and for configure first changes) the key's
        // override in Redis: ARGV clear, then per field "" (keep), "-"
        // (remove) or the new value.
        script = RedisFunction::Policy;
        const bool configure = req.op == Op::Configure;
        args.push_back(configure && req.policy_clear ? std::string(kRedisArgTrue) : "0");
        for (std::size_t i = 0; i < kPolicyFieldCount; ++i)
            args.push_back(!configure                     ? std::string()
                           : req.policy.values[i]         ? std::to_string(*req.policy.values[i])
                           : req.policy_removed.values[i] ? std::string(kRedisArgRemove)
                                                          : std::string());
        return true;
    }
    case Op::List:
        script = RedisFunction::List;
        args = {req.prefix, req.after, std::to_string(req.limit),
                req.state_filter ? std::string(state_name(*req.state_filter)) : std::string()};
        return true;
    case Op::Export:
        script = RedisFunction::Export;
        args = {req.prefix, req.after, std::to_string(req.limit)};
        return true;
    case Op::Import: {
        script = RedisFunction::Import;
        args.push_back(req.snapshot ? std::string(kRedisArgTrue) : "0");
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
        return true;
    }
    case Op::Ping:
    case Op::Watch:
    case Op::Stats:
    case Op::Metrics:
    case Op::ReportBatch: // the dispatcher runs each entry as a report
        break;
    }
    return false;
}

} // namespace

bool RedisBackend::run(const Request& req, const Peer& peer, OpOutcome& now, Deferral& deferral) {
    RedisFunction script{};
    std::vector<std::string> args;
    if (!script_call(req, peer, script, args)) {
        now.fail(ErrorCode::InternalError, "not a circuit operation");
        return true;
    }
    redis_.run(script, req.key, policies_, args, peer.connection, deferral.later());
    return false;
}

void RedisBackend::set_policy_config(PolicyConfig config) {
    redis_.set_policy_digest(policy_digest(config));
    policies_.set_config(std::move(config));
}

std::optional<CircuitCounts> RedisBackend::counts() const {
    return redis_.counts();
}

} // namespace cbd
