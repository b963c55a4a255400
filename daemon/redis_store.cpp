// RedisStore (see redis_store.hpp).
#include "daemon/redis_store.hpp"

#include "daemon/log.hpp"

#include <charconv>
#include <hiredis/hiredis.h>
#include <nlohmann/json.hpp>

namespace cbd {

namespace {

std::string_view str(const redisReply* r) {
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
                 r->type == REDIS_REPLY_ERROR)
               ? std::string_view(r->str, r->len)
               : std::string_view();
}

// An integer reply, or a string holding one (HMGET answers strings). Never
// throws: what Redis holds may have been edited by hand, and a bad value
// reads as 0 rather than taking the daemon down.
std::int64_t num(const redisReply* r) {
    if (r && r->type == REDIS_REPLY_INTEGER)
        return static_cast<std::int64_t>(r->integer);
    const auto text = str(r);
    std::int64_t value = 0;
    std::from_chars(text.data(), text.data() + text.size(), value);
    return value;
}

std::optional<TransitionCause> cause_named(std::string_view name) {
    for (std::size_t i = 0; i < kTransitionCauseCount; ++i) {
        const auto cause = static_cast<TransitionCause>(i);
        if (transition_cause_name(cause) == name)
            return cause;
    }
    return std::nullopt;
}

// A circuit from 11 consecutive replies in the hash's field order: state,
// fc, sc, lft, lsc, gen, ps, pu, pr, puid, ppid (a script's result from
// kResState on, or HMGET of the hash).
CircuitView view_from_fields(redisReply* const* f) {
    auto as_int = [&](std::size_t i) { return num(f[i]); };
    CircuitView v;
    v.snapshot.state = parse_state(str(f[0])).value_or(State::Closed);
    v.snapshot.failure_count = static_cast<std::uint64_t>(as_int(1));
    v.snapshot.success_count = static_cast<std::uint64_t>(as_int(2));
    v.snapshot.last_failure_time = as_int(3);
    v.snapshot.last_state_change = as_int(4);
    v.generation = static_cast<std::uint64_t>(as_int(5));
    if (auto pin = parse_state(str(f[6]))) {
        ForcePin p{*pin, as_int(7), std::string(str(f[8])), Peer{}};
        p.by.uid = static_cast<uid_t>(as_int(9));
        p.by.pid = static_cast<pid_t>(as_int(10));
        v.forced = std::move(p);
    }
    return v;
}

} // namespace

RedisStore::RedisStore(boost::asio::io_context& io, RedisStoreOptions options, DaemonStats& stats,
                       CircuitObserver* observer)
    : options_(std::move(options)), stats_(stats), observer_(observer),
      commands_(io, options_.connection, script_setup(),
                [this](bool up, const std::string& why) {
                    stats_.backend.up = up;
                    if (!up) {
                        stats_.backend.disconnects += 1;
                        stats_.backend.last_error = why;
                    }
                }),
      events_(io, options_.connection,
              {RedisConnection::SetupCommand{{"SUBSCRIBE", options_.prefix + "events"}, nullptr}},
              nullptr) {
    stats_.backend.kind = "redis";
    stats_.backend.address = options_.connection.endpoint.describe();
    events_.on_push([this](const redisReply* reply) { on_event(reply); });
}

RedisConnection::Setup RedisStore::script_setup() {
    RedisConnection::Setup setup;
    for (std::size_t i = 0; i < kRedisScriptCount; ++i)
        setup.push_back({{"SCRIPT", "LOAD", redis_script_source(static_cast<RedisScript>(i))},
                         [this, i](const redisReply& reply) {
                             shas_[i] = std::string(str(&reply));
                         }});
    return setup;
}

void RedisStore::start() {
    commands_.start();
    events_.start();
}

void RedisStore::stop() {
    commands_.stop();
    events_.stop();
}

void RedisStore::sweep() {
    if (!commands_.up() || sweeping_)
        return;
    sweeping_ = true; // one at a time: a slow Redis must not pile them up
    run(RedisScript::Sweep, "", Policy{}, {}, [this](RemoteResult) { sweeping_ = false; });
}

void RedisStore::run(RedisScript script, std::string_view key, const Policy& policy,
                     const std::vector<std::string>& args, std::function<void(RemoteResult)> done) {
    const auto idx = static_cast<std::size_t>(script);
    const auto keys = redis_script_keys(options_.prefix, key);
    std::array<std::string, 5> numbers;
    for (std::size_t i = 0; i < kPolicyFieldCount; ++i)
        numbers[i] = std::to_string(policy.get(static_cast<PolicyField>(i)));
    // Until SCRIPT LOAD has answered (the first connection), send the source.
    const bool by_sha = !shas_[idx].empty();
    std::vector<std::string_view> argv;
    argv.reserve(3 + keys.size() + 1 + numbers.size() + args.size());
    argv.push_back(by_sha ? "EVALSHA" : "EVAL");
    argv.push_back(by_sha ? std::string_view(shas_[idx]) : redis_script_source(script));
    argv.push_back("6");
    for (const auto& k : keys)
        argv.push_back(k);
    argv.push_back(key);
    for (const auto& n : numbers)
        argv.push_back(n);
    for (const auto& a : args)
        argv.push_back(a);
    const std::string max_circuits = std::to_string(options_.max_circuits);
    argv.push_back(max_circuits);

    commands_.command(argv, [this, script, done = std::move(done)](const redisReply* reply,
                                                                  const std::string& error) {
        RemoteResult r;
        if (reply && reply->type == REDIS_REPLY_ERROR &&
            str(reply).find("TOO_MANY_CIRCUITS") != std::string_view::npos) {
            r.error = ErrorCode::TooManyCircuits;
            done(std::move(r));
            return;
        }
        if (!reply || reply->type == REDIS_REPLY_ERROR) {
            r.error = ErrorCode::BackendUnavailable;
            r.unavailable_reason = reply ? "Redis answered: " + std::string(str(reply)) : error;
            stats_.backend.unavailable += 1;
            if (reply) {
                stats_.backend.last_error = r.unavailable_reason;
                log_error("Redis backend: " + r.unavailable_reason);
            }
            done(std::move(r));
            return;
        }
        if (script == RedisScript::Import || script == RedisScript::Sweep) {
            done(std::move(r));
            return;
        }
        if (script == RedisScript::Export) {
            constexpr std::size_t kFields = 17;
            if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
                (reply->elements - 1) % kFields != 0) {
                r.error = ErrorCode::BackendUnavailable;
                r.unavailable_reason = "an unexpected answer from Redis";
                done(std::move(r));
                return;
            }
            r.exported.next = std::string(str(reply->element[0]));
            for (std::size_t i = 1; i + kFields <= reply->elements; i += kFields) {
                StoredCircuit record;
                record.key = std::string(str(reply->element[i]));
                if (!str(reply->element[i + 1]).empty())
                    record.circuit = view_from_fields(reply->element + i + 1);
                for (std::size_t f = 0; f < kPolicyFieldCount; ++f) {
                    const auto v = str(reply->element[i + 12 + f]);
                    if (!v.empty())
                        record.policy.values[f] = num(reply->element[i + 12 + f]);
                }
                r.exported.circuits.push_back(std::move(record));
            }
            done(std::move(r));
            return;
        }
        if (script == RedisScript::List) {
            if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
                (reply->elements - 1) % 12 != 0) {
                r.error = ErrorCode::BackendUnavailable;
                r.unavailable_reason = "an unexpected answer from Redis";
                done(std::move(r));
                return;
            }
            r.page.next = std::string(str(reply->element[0]));
            for (std::size_t i = 1; i + 12 <= reply->elements; i += 12) {
                // The same fields as a circuit result, shifted: the key first.
                ListEntry e;
                e.key = std::string(str(reply->element[i]));
                e.circuit = view_from_fields(reply->element + i + 1);
                r.page.circuits.push_back(std::move(e));
            }
            done(std::move(r));
            return;
        }
        if (script == RedisScript::Policy) {
            for (std::size_t i = 0; i < kPolicyFieldCount && i + 1 < reply->elements; ++i) {
                const auto v = str(reply->element[i + 1]);
                if (!v.empty())
                    r.policy_override.values[i] = num(reply->element[i + 1]);
            }
            done(std::move(r));
            return;
        }
        if (script == RedisScript::Reset) {
            r.extra1 = reply->elements >= 2 ? num(reply->element[1]) : 0;
            done(std::move(r));
            return;
        }
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != kResFieldCount) {
            r.error = ErrorCode::BackendUnavailable;
            r.unavailable_reason = "an unexpected answer from Redis";
            done(std::move(r));
            return;
        }
        const auto status = str(reply->element[kResStatus]);
        r.circuit = view_from_fields(reply->element + kResState);
        if (status == "conflict")
            r.error = ErrorCode::Conflict;
        else if (status == "forced")
            r.error = ErrorCode::Forced;
        else if (status == "no_permit")
            r.error = ErrorCode::NoPermit;
        else if (status == "stale")
            r.stale = true;
        if (auto to = parse_state(str(reply->element[kResTo]))) {
            auto from = parse_state(str(reply->element[kResFrom]));
            auto cause = cause_named(str(reply->element[kResCause]));
            r.transition = TransitionRecord{from.value_or(*to), *to,
                                            cause.value_or(TransitionCause::Manual),
                                            r.circuit.snapshot.last_state_change,
                                            r.circuit.generation};
        }
        r.extra1 = num(reply->element[kResExtra1]);
        r.extra2 = std::string(str(reply->element[kResExtra2]));
        r.extra3 = num(reply->element[kResExtra3]);
        done(std::move(r));
    });
}

void RedisStore::on_event(const redisReply* reply) {
    // ["message", channel, payload]
    if (!observer_ || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        str(reply->element[0]) != "message")
        return;
    auto event = nlohmann::json::parse(str(reply->element[2]), nullptr, false);
    if (!event.is_array() || event.empty() || !event[0].is_string())
        return;
    try {
        const auto kind = event[0].get<std::string>();
        const auto key = event.at(1).get<std::string>();
        if (kind == "reset") {
            observer_->on_reset(key, event.at(2).get<std::int64_t>());
            return;
        }
        if (kind != "transition" || event.size() != 17)
            return;
        TransitionRecord t{parse_state(event[2].get<std::string>()).value_or(State::Closed),
                           parse_state(event[3].get<std::string>()).value_or(State::Closed),
                           cause_named(event[5].get<std::string>()).value_or(TransitionCause::Manual),
                           event[4].get<std::int64_t>(), event[6].get<std::uint64_t>()};
        CircuitView v;
        v.snapshot = Snapshot{parse_state(event[7].get<std::string>()).value_or(State::Closed),
                              event[8].get<std::uint64_t>(), event[9].get<std::uint64_t>(),
                              event[10].get<std::int64_t>(), event[11].get<std::int64_t>()};
        v.generation = t.generation;
        if (auto pin = parse_state(event[12].get<std::string>())) {
            ForcePin p{*pin, event[13].get<std::int64_t>(), event[14].get<std::string>(), Peer{}};
            p.by.uid = static_cast<uid_t>(event[15].get<std::int64_t>());
            p.by.pid = static_cast<pid_t>(event[16].get<std::int64_t>());
            v.forced = std::move(p);
        }
        observer_->on_transition(key, t, v);
    } catch (const nlohmann::json::exception& e) {
        log_warn(std::string("Redis backend: an event that does not parse: ") + e.what());
    }
}

} // namespace cbd
