// RedisStore (see redis_store.hpp).
#include "daemon/backends/redis/redis_store.hpp"

#include "daemon/breaker/policy_digest.hpp"
#include "daemon/core/log.hpp"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <charconv>
#include <hiredis/hiredis.h>
#include <nlohmann/json.hpp>
#include <type_traits>

namespace cbd {

namespace {

std::string_view str(const redisReply* r) {
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
                 r->type == REDIS_REPLY_ERROR)
               ? std::string_view(r->str, r->len)
               : std::string_view();
}

// An integer reply, or a string holding one. The scripts check every value
// they read from Redis before answering it (redis_functions.cpp), so what
// comes here is in range; this only never throws.
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

// A circuit from kRedisCircuitFieldCount consecutive replies in the hash's
// field order (a circuit script's result from kResState on, or a paged
// script's entry after its key).
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

OpOutcome unexpected_answer() {
    OpOutcome r;
    r.fail(ErrorCode::BackendError,
           "Redis answered in a shape cbd does not know (a script of another cbd version?)");
    return r;
}

// A paged job's failure: once one of its calls has run (settling the
// circuits it showed), a later call's being unsent does not make the whole
// surely unapplied.
OpOutcome later_step_failure(bool stepped, OpOutcome failure) {
    if (stepped && failure.surely_not_applied()) {
        const auto code = *failure.error();
        const std::string message = failure.error_message;
        failure.fail(code, message);
    }
    return failure;
}

// Redis could not serve the operation, and why.
OpOutcome outage(std::string_view why) {
    OpOutcome r;
    r.fail(ErrorCode::BackendUnavailable, "the Redis backend is unavailable: " + std::string(why));
    return r;
}

// A circuit script's answer (kResFieldCount fields) as the memory store
// gives it: the circuit, a refusal, the transition it made; acquire's and
// report's own fields are the caller's.
template <typename Result> Result circuit_result(redisReply* const* f) {
    Result r;
    r.circuit = view_from_fields(f + kResState);
    const auto status = str(f[kResStatus]);
    if (status == kRedisStatusNames[1])
        r.error = ErrorCode::Conflict;
    else if (status == kRedisStatusNames[2])
        r.error = ErrorCode::Forced;
    else if (status == kRedisStatusNames[3])
        r.error = ErrorCode::NoPermit;
    if constexpr (std::is_same_v<Result, ReportResult>)
        r.stale = status == kRedisStatusNames[4];
    if (auto to = parse_state(str(f[kResTo]))) {
        auto from = parse_state(str(f[kResFrom]));
        auto cause = cause_named(str(f[kResCause]));
        r.transition =
            TransitionRecord{from.value_or(*to), *to, cause.value_or(TransitionCause::Manual),
                             r.circuit.snapshot.last_state_change, r.circuit.generation};
    }
    r.circuit.would_deny = num(f[kResWouldDeny]) != 0;
    if (num(f[kResWindow]) != 0)
        r.circuit.window = window_view(num(f[kResWindowCalls]), num(f[kResWindowFailures]),
                                       num(f[kResWindowSlow]));
    return r;
}

// What `script` answered for one circuit, in its operation's result type.
OpOutcome circuit_answer(RedisFunction script, redisReply* const* f) {
    OpOutcome out;
    if (script == RedisFunction::Acquire) {
        auto r = circuit_result<AcquireResult>(f);
        r.allowed = num(f[kResAllowed]) != 0;
        r.permit = str(f[kResPermit]);
        r.retry_after_ms = num(f[kResRetryAfterMs]);
        out.result = std::move(r);
    } else if (script == RedisFunction::Report) {
        out.result = circuit_result<ReportResult>(f);
    } else {
        out.result = circuit_result<StoreResult>(f);
    }
    return out;
}

// An event's number: the scripts send decimal strings (cjson would round
// past 14 digits); older ones sent numbers.
std::int64_t event_int(const nlohmann::json& v) {
    if (v.is_number_integer())
        return v.get<std::int64_t>();
    if (v.is_string()) {
        const auto& s = v.get_ref<const std::string&>();
        std::int64_t value = 0;
        auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
        if (ec == std::errc() && end == s.data() + s.size())
            return value;
    }
    throw nlohmann::json::type_error::create(302, "an event's number is not an integer", &v);
}

} // namespace

// One function call, kept whole until it is answered: it waits in the send
// queue, then goes to Redis alone or in a batch (and again, once, after the
// library was lost).
struct RedisStore::Call {
    RedisFunction function;
    std::string key;
    std::vector<std::string> args; // the kRedisKeysPerCall KEYS, then ARGV
    ReplyHandler then;
    std::uint64_t source = 0; // the client connection (Peer::connection); 0: cbd's own
    bool read = false;        // a read-level operation (the queue bounds those)
    std::size_t weight = 1;   // what it costs Redis, in single operations
    // --redis-min-replicas: the WAIT its answer waits for, enrolled once the
    // call is written to the connection, so that the WAIT follows it.
    std::shared_ptr<WaitTicket> wait;
};

// Calls sent together (one FCALL), counted in flight until Redis answers.
struct RedisStore::Flight {
    std::vector<std::shared_ptr<Call>> calls;
    std::size_t weight = 0;      // of all its calls
    std::size_t read_weight = 0; // of its clients' reads
    bool retried = false;        // sent again after loading the library once more
};

// The scripts whose answers wait for one WAIT, and that WAIT's outcome.
struct RedisStore::WaitBatch {
    std::vector<std::shared_ptr<WaitTicket>> tickets;
    std::chrono::steady_clock::time_point first; // when its first script was sent
    bool answered = false;
};

// One operation's answer, held until its WAIT says enough replicas have it.
struct RedisStore::WaitTicket {
    std::function<void(OpOutcome)> done;
    std::shared_ptr<WaitBatch> batch;
    std::optional<OpOutcome> result; // the script answered; the WAIT has not
    bool delivered = false;
};

struct RedisStore::ListJob {
    std::string prefix;
    std::string state; // '' = any
    std::size_t limit = 0;
    std::string after;
    std::size_t examined = 0;
    std::uint64_t source = 0;
    bool stepped = false; // a call of it has run (and may have settled circuits)
    ListPage page;
    std::function<void(OpOutcome)> done;
};

struct RedisStore::ExportJob {
    std::string prefix;
    std::size_t limit = 0;
    std::string after;
    std::uint64_t source = 0;
    bool stepped = false;
    ExportPage page;
    std::function<void(OpOutcome)> done;
};

RedisStore::RedisStore(boost::asio::io_context& io, RedisStoreOptions options,
                       CircuitObserver* observer)
    : io_(io), options_(std::move(options)), observer_(observer), queue_(kRedisQueueCapacity),
      expiry_(io), commands_(io, options_.connection, connection_setup(),
                             [this](bool up, const std::string& why) {
                                 stats_.up = up;
                                 if (!up) {
                                     stats_.disconnects += 1;
                                     stats_.last_error = why;
                                 }
                                 if (discovery_)
                                     discovery_->master_usable(up);
                                 if (up)
                                     schedule_pump(); // what waited for the set-up goes now
                                 else
                                     refuse_waiting(why);
                             }),
      events_(io, options_.connection,
              {RedisConnection::SetupCommand{
                  {"SUBSCRIBE", options_.prefix + std::string(kRedisEventsKey)}, nullptr}},
              [this](bool up, const std::string& why) {
                  // Transitions made elsewhere while it was down are not
                  // seen here (watchers miss them): counted, as the command
                  // connection's drops are.
                  stats_.events_up = up;
                  if (!up) {
                      stats_.events_disconnects += 1;
                      stats_.last_error = why;
                  }
              }) {
    stats_.min_replicas = options_.min_replicas;
    if (options_.sentinel) {
        stats_.address = options_.sentinel->address.describe();
        stats_.sentinel = true;
        discovery_ = std::make_unique<SentinelDiscovery>(
            io, *options_.sentinel, [this](const RedisEndpoint& master, const std::string& how) {
                on_master_named(master, how);
            });
    } else {
        stats_.address = options_.connection.endpoint.describe();
        stats_.master = stats_.address;
    }
    events_.on_push([this](const redisReply* reply) { on_event(reply); });
}

RedisConnection::Setup RedisStore::connection_setup() {
    RedisConnection::Setup setup;
    if (options_.sentinel) {
        // What a sentinel names is used only once the Redis itself says it
        // is the master: during a failover the sentinels' answers lag.
        setup.push_back({{"ROLE"}, [this](const redisReply& reply) -> std::optional<std::string> {
                             std::string problem;
                             const auto role = role_from_reply(&reply, problem);
                             if (!role)
                                 return problem;
                             if (*role != "master")
                                 return "ROLE says " + commands_.endpoint().describe() + " is a " +
                                        *role + ", not the master";
                             return std::nullopt;
                         }});
    }
    // Functions need Redis 7: say which version was found, not that
    // FUNCTION is an unknown command.
    setup.push_back(
        {{"INFO", "server"}, [this](const redisReply& reply) -> std::optional<std::string> {
             const auto version = redis_version_of(str(&reply));
             stats_.redis_version = version;
             if (!redis_version_supported(version))
                 return "cbd needs Redis " + std::string(kRedisMinimumVersion) +
                        " or newer (it runs a Redis Functions library); " +
                        commands_.endpoint().describe() + " runs Redis " +
                        (version.empty() ? "of an unknown version" : version);
             return std::nullopt;
         }});
    // Functions persist and replicate: REPLACE loads this cbd's library
    // whether or not another cbd of the same version loaded it already.
    setup.push_back({{"FUNCTION", "LOAD", "REPLACE", redis_library_source()}, nullptr});
    return setup;
}

void RedisStore::start() {
    if (discovery_) {
        discovery_->start(); // the connections start once a master is named
        return;
    }
    commands_.start();
    events_.start();
}

void RedisStore::stop() {
    stopped_ = true;
    expiry_.cancel();
    std::vector<std::shared_ptr<Call>> waiting;
    queue_.drain([&](SendQueue::Entry entry) { waiting.push_back(std::move(entry.item)); });
    stats_.queued = 0;
    for (auto& call : waiting)
        refuse(*call, "cbd is stopping");
    if (discovery_)
        discovery_->stop();
    commands_.stop();
    events_.stop();
    // A batch whose WAIT was never sent: its scripts have been answered
    // (the connection failed them), or are answered now.
    if (auto batch = std::exchange(open_batch_, nullptr)) {
        for (auto& ticket : batch->tickets)
            if (!ticket->delivered && ticket->done) {
                ticket->delivered = true;
                auto done = std::move(ticket->done);
                done(outage("cbd is stopping"));
            }
        batch->tickets.clear();
    }
}

void RedisStore::on_master_named(const RedisEndpoint& master, const std::string& how) {
    if (!follower_.should_switch(master))
        return;
    const auto old = follower_.master();
    follower_.switched(master);
    stats_.master = master.describe();
    stats_.failovers = follower_.failovers();
    const std::string why = "the Redis master moved to " + master.describe();
    if (old)
        log_warn("Redis master switched from " + old->describe() + " to " + master.describe() +
                 " (" + how + ")");
    else
        log_info("Redis master is " + master.describe() + " (" + how + ")");
    commands_.retarget(master, why);
    events_.retarget(master, why);
}

void RedisStore::note_backend_error(const std::string& message) {
    if (message == last_logged_error_)
        return;
    last_logged_error_ = message;
    log_warn("Redis backend: " + message);
}

void RedisStore::sweep() {
    if (!commands_.up())
        return;
    if (const auto now = std::chrono::steady_clock::now(); now >= next_exchange_) {
        next_exchange_ = now + std::chrono::milliseconds(kPolicyDigestIntervalMs);
        exchange_policy_digest();
    }
    if (sweeping_)
        return;
    sweeping_ = true; // one at a time: a slow Redis must not pile them up
    send(make_call(RedisFunction::Sweep, "", Policy{}, {}, 0),
         [this](const redisReply* reply, const OpOutcome& failure) {
             sweeping_ = false;
             if (!reply) {
                 if (failure.error() == ErrorCode::BackendError)
                     note_backend_error(failure.error_message);
                 return;
             }
             // {ok, settled, total, closed, open, half-open, pinned, first error}
             if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 8)
                 return;
             auto count = [&](std::size_t i) {
                 return static_cast<std::size_t>(std::max<std::int64_t>(0, num(reply->element[i])));
             };
             counts_ = CircuitCounts{count(2), count(3), count(4), count(5), count(6)};
             if (const auto error = str(reply->element[7]); !error.empty())
                 note_backend_error("the sweep skipped a circuit: " + redis_error_text(error));
         });
}

std::shared_ptr<RedisStore::Call> RedisStore::make_call(RedisFunction function,
                                                        std::string_view key, const Policy& policy,
                                                        const std::vector<std::string>& args,
                                                        std::uint64_t source) const {
    auto call = std::make_shared<Call>();
    call->function = function;
    call->key = std::string(key);
    call->source = source;
    // A read whoever asks (a client connection, or the HTTP listener's
    // dashboard, whose calls come as source 0): only the sweep is cbd's own.
    call->read = function != RedisFunction::Sweep && !redis_function_mutates(function, args);
    call->weight = redis_function_weight(function);
    const auto keys = redis_function_keys(options_.prefix, key);
    auto& a = call->args;
    a.reserve(keys.size() + 1 + kPolicyFieldCount + args.size() + 2);
    a.insert(a.end(), keys.begin(), keys.end());
    a.emplace_back(key);
    for (std::size_t i = 0; i < kPolicyFieldCount; ++i)
        a.push_back(std::to_string(policy.get(static_cast<PolicyField>(i))));
    a.insert(a.end(), args.begin(), args.end());
    a.push_back(std::to_string(options_.max_circuits));
    // The test clock stands in for Redis's TIME, which is the Redis host's
    // wall clock: its wall reading, steps and all (docs/REDIS.md, *Time*).
    a.push_back(options_.test_clock ? std::to_string(options_.test_clock->now_ms() +
                                                     options_.test_clock->wall_offset_ms())
                                    : std::string());
    return call;
}

void RedisStore::send(std::shared_ptr<Call> call, ReplyHandler then) {
    call->then = std::move(then);
    if (stopped_) {
        refuse(*call, "cbd is stopping");
        return;
    }
    // Known to be down: answered at once, not after a timeout (calls queued
    // before the connection went down wait for it, each to its deadline).
    if (!commands_.up()) {
        refuse(*call, commands_.why_down());
        return;
    }
    const auto deadline = std::chrono::steady_clock::now() + options_.connection.timeout;
    switch (queue_.push(call->source, call->read, deadline, call)) {
    case SendQueue::Admission::Queued:
        stats_.queued = queue_.size();
        schedule_pump();
        if (!expiry_armed_)
            arm_expiry();
        return;
    case SendQueue::Admission::Full:
        refuse(*call, "cbd's queue for Redis is full (" + std::to_string(kRedisQueueCapacity) +
                          " operations wait)");
        return;
    case SendQueue::Admission::ReadsFull:
        refuse(*call, "reads hold half of cbd's queue for Redis (" +
                          std::to_string(kRedisQueueCapacity / 2) + " wait)");
        return;
    }
}

void RedisStore::refuse(Call& call, const std::string& why, bool sent) {
    stats_.unavailable += 1;
    stats_.unsent += 1;
    OpOutcome r;
    r.fail_unapplied(ErrorCode::BackendUnavailable,
                     "the Redis backend is unavailable: " + why +
                         (sent ? "; it did not run in Redis, so it was not applied"
                               : "; the operation was not sent to Redis, so it was not applied"));
    auto then = std::move(call.then);
    then(nullptr, std::move(r));
}

void RedisStore::refuse_waiting(const std::string& why) {
    // Known down: what waits is answered now, as what arrives meanwhile is,
    // not at its deadline (a Redis refusing the set-up would otherwise hold
    // every call for the whole timeout). None of it was sent.
    std::vector<std::shared_ptr<Call>> waiting;
    queue_.drain([&](SendQueue::Entry entry) { waiting.push_back(std::move(entry.item)); });
    stats_.queued = 0;
    for (auto& call : waiting)
        refuse(*call, "not connected to Redis (" + why + ")");
}

void RedisStore::schedule_pump() {
    if (pump_posted_)
        return;
    pump_posted_ = true;
    // Posted: what arrives in this turn of the loop can go in one batch.
    boost::asio::post(io_, [this] {
        pump_posted_ = false;
        pump();
    });
}

void RedisStore::pump() {
    // Not connected (or the set-up not done): the calls wait, each until
    // its deadline, and go once the connection is ready.
    // In flight and in a batch, calls count by their weight (what they
    // cost Redis): a list step examines up to kRedisScanPerCall keys. The
    // last call taken may pass a bound by its own weight.
    while (!stopped_ && commands_.ready() && in_flight_ < kRedisInFlight) {
        auto flight = std::make_shared<Flight>();
        while (flight->weight < kRedisBatchMax && in_flight_ + flight->weight < kRedisInFlight) {
            // Reads never hold more than half of what is in flight, so a
            // read-level flood leaves the writers the other half.
            auto entry = queue_.pop(reads_in_flight_ + flight->read_weight < kRedisInFlight / 2);
            if (!entry)
                break;
            flight->weight += entry->item->weight;
            flight->read_weight += entry->read ? entry->item->weight : 0;
            flight->calls.push_back(std::move(entry->item));
        }
        if (flight->calls.empty())
            break;
        transmit(std::move(flight));
    }
    stats_.queued = queue_.size();
    stats_.in_flight = in_flight_;
}

void RedisStore::arm_expiry() {
    const auto first = queue_.earliest_deadline();
    if (!first) {
        expiry_armed_ = false;
        return;
    }
    expiry_armed_ = true;
    expiry_.expires_at(*first);
    expiry_.async_wait([this](const boost::system::error_code& ec) {
        if (ec)
            return;
        expiry_armed_ = false;
        std::vector<std::shared_ptr<Call>> expired;
        queue_.expire(std::chrono::steady_clock::now(),
                      [&](SendQueue::Entry entry) { expired.push_back(std::move(entry.item)); });
        stats_.queued = queue_.size();
        stats_.expired += expired.size();
        const std::string timeout =
            std::to_string(options_.connection.timeout.count()) + " ms (--backend-timeout)";
        const std::string why =
            commands_.ready()
                ? "no room to send it to Redis within " + timeout
                : "not connected to Redis within " + timeout +
                      (stats_.last_error.empty() ? "" : " (" + stats_.last_error + ")");
        for (auto& call : expired)
            refuse(*call, why);
        if (!expiry_armed_)
            arm_expiry();
    });
}

void RedisStore::transmit(std::shared_ptr<Flight> flight) {
    const std::size_t n = flight->calls.size();
    in_flight_ += flight->weight;
    reads_in_flight_ += flight->read_weight;
    // One call: FCALL its function. Several: FCALL the batch function with
    // every call's keys, then per call its name, its ARGV's length and ARGV.
    std::vector<std::string_view> argv;
    std::vector<std::string> lengths;
    const std::string function =
        n == 1 ? redis_function_name(flight->calls[0]->function) : redis_batch_function_name();
    const std::string numkeys = std::to_string(n * kRedisKeysPerCall);
    argv.push_back("FCALL");
    argv.push_back(function);
    argv.push_back(numkeys);
    for (const auto& call : flight->calls)
        argv.insert(argv.end(), call->args.begin(), call->args.begin() + kRedisKeysPerCall);
    if (n == 1) {
        const auto& args = flight->calls[0]->args;
        argv.insert(argv.end(), args.begin() + kRedisKeysPerCall, args.end());
    } else {
        lengths.reserve(n);
        for (const auto& call : flight->calls)
            lengths.push_back(std::to_string(call->args.size() - kRedisKeysPerCall));
        for (std::size_t i = 0; i < n; ++i) {
            const auto& call = *flight->calls[i];
            argv.push_back(kRedisFunctionNames[static_cast<std::size_t>(call.function)]);
            argv.push_back(lengths[i]);
            argv.insert(argv.end(), call.args.begin() + kRedisKeysPerCall, call.args.end());
        }
    }
    outstanding_.push_back(flight);
    commands_.command(argv, [this, flight](const redisReply* reply, const std::string& error) {
        const std::size_t count = flight->calls.size();
        in_flight_ -= flight->weight;
        reads_in_flight_ -= flight->read_weight;
        outstanding_.erase(std::find(outstanding_.begin(), outstanding_.end(), flight));
        if (reply && reply->type == REDIS_REPLY_ERROR &&
            classify_redis_error(str(reply)) == RedisErrorKind::NoFunction && !flight->retried) {
            // FUNCTION FLUSH (or a Redis that lost its data): the calls did
            // not run. Load the library again (every call sent from now on
            // follows it on the connection).
            log_warn("Redis backend: Redis lost cbd's functions (" + redis_error_text(str(reply)) +
                     "); loading them again");
            commands_.command({"FUNCTION", "LOAD", "REPLACE", redis_library_source()},
                              [](const redisReply*, const std::string&) {});
            if (overtaken(*flight)) {
                // A later call of the same client connection is on its way
                // already (and may run: another cbd may load the library
                // first). Sent again, these would run after it: they did
                // not run, and are answered so.
                for (auto& call : flight->calls)
                    refuse(*call,
                           "Redis had lost cbd's functions (loaded again); the operation "
                           "did not run, and is not sent again after this connection's "
                           "later operations",
                           true);
                schedule_pump();
                return;
            }
            // Nothing of theirs follows: the same calls again, in order.
            flight->retried = true;
            transmit(flight);
            return;
        }
        if (count == 1 || !reply || reply->type != REDIS_REPLY_ARRAY) {
            // One call's answer; or the batch as a whole refused (an error
            // every call in it would have met alone) or lost with the
            // connection.
            for (auto& call : flight->calls)
                answer(*call, reply, error);
        } else if (reply->elements != count) {
            for (auto& call : flight->calls) {
                auto then = std::move(call->then);
                then(nullptr, unexpected_answer());
            }
        } else {
            for (std::size_t i = 0; i < count; ++i)
                answer(*flight->calls[i], reply->element[i], error);
        }
        schedule_pump();
    });
    // --redis-min-replicas: the WAIT (posted) follows what was just written.
    for (const auto& call : flight->calls)
        if (call->wait && !call->wait->delivered)
            enroll_wait(call->wait);
}

bool RedisStore::overtaken(const Flight& flight) const {
    for (const auto& other : outstanding_)
        for (const auto& later : other->calls)
            for (const auto& call : flight.calls)
                if (call->source != 0 && later->source == call->source)
                    return true;
    return false;
}

void RedisStore::answer(Call& call, const redisReply* reply, const std::string& error) {
    auto then = std::move(call.then);
    auto unavailable = [&](const std::string& why, bool log) {
        stats_.unavailable += 1;
        if (log) {
            stats_.last_error = why;
            log_error("Redis backend: " + why);
        }
        then(nullptr, outage(why));
    };
    if (!reply) {
        unavailable(error, false);
        return;
    }
    OpOutcome failure;
    if (reply->type != REDIS_REPLY_ERROR) {
        then(reply, std::move(failure));
        return;
    }
    const auto text = str(reply);
    switch (classify_redis_error(text)) {
    case RedisErrorKind::NoFunction:
        unavailable("Redis does not keep cbd's functions: " + std::string(text), true);
        return;
    case RedisErrorKind::TooMany: {
        // The library says which limit ("... circuits", "... key policies").
        const auto said = redis_error_text(text);
        failure.fail(ErrorCode::TooManyCircuits,
                     said.empty() ? "the shared store holds its maximum number of circuits" : said);
        then(nullptr, std::move(failure));
        return;
    }
    case RedisErrorKind::Outage:
        unavailable("Redis answered: " + std::string(text), true);
        // A master that answers READONLY has become a replica: find the one
        // that replaced it (the connection's ROLE check and the sentinels
        // decide where to go).
        if (discovery_ && text.starts_with("READONLY") && commands_.up())
            commands_.drop("the master answered READONLY: it is a replica now");
        return;
    case RedisErrorKind::Invalid:
        failure.fail(ErrorCode::InvalidRequest, redis_error_text(text));
        then(nullptr, std::move(failure));
        return;
    case RedisErrorKind::Data:
        // The library's own errors name the Redis key (and field); an error
        // Redis raised outside them gets the circuit's key here.
        failure.fail(ErrorCode::BackendError,
                     text.starts_with(kRedisErrBackend) || call.key.empty()
                         ? redis_error_text(text)
                         : "for key '" + call.key + "' Redis answered: " + redis_error_text(text));
        note_backend_error(failure.error_message);
        then(nullptr, std::move(failure));
        return;
    }
}

void RedisStore::run(RedisFunction script, std::string_view key, const PolicySet& layers,
                     const std::vector<std::string>& args, std::uint64_t source,
                     std::function<void(OpOutcome)> done) {
    // A completion handler must never throw: whatever goes wrong here is an
    // answer, not an exception on the event loop.
    auto safely = [done = std::move(done)](OpOutcome r) mutable {
        try {
            done(std::move(r));
        } catch (const std::exception& e) {
            log_error(std::string("Redis backend: answering a request failed: ") + e.what());
        }
    };

    if (script == RedisFunction::List) {
        // args: prefix, after, limit, state filter ('' = any).
        auto job = std::make_shared<ListJob>();
        if (args.size() != 4) {
            safely(unexpected_answer());
            return;
        }
        job->prefix = args[0];
        job->after = args[1];
        std::from_chars(args[2].data(), args[2].data() + args[2].size(), job->limit);
        job->state = args[3];
        job->source = source;
        job->done = std::move(safely);
        list_step(std::move(job));
        return;
    }
    if (script == RedisFunction::Export) {
        // args: prefix, after, limit.
        auto job = std::make_shared<ExportJob>();
        if (args.size() != 3) {
            safely(unexpected_answer());
            return;
        }
        job->prefix = args[0];
        job->after = args[1];
        std::from_chars(args[2].data(), args[2].data() + args[2].size(), job->limit);
        job->source = source;
        job->done = std::move(safely);
        export_step(std::move(job));
        return;
    }

    std::function<void(OpOutcome)> answer = std::move(safely);
    std::shared_ptr<WaitTicket> ticket;
    if (options_.min_replicas > 0 && redis_function_mutates(script, args)) {
        // Enrolled by transmit(), once the call is written: the WAIT of the
        // calls written in one turn of the loop follows them.
        ticket = std::make_shared<WaitTicket>();
        ticket->done = std::move(answer);
        answer = [this, ticket](OpOutcome r) { answer_ticket(ticket, std::move(r)); };
    }
    // The daemon's layers; the script lays the key's override from Redis
    // over them (and derives the lease after it, as PolicySet does).
    const Policy numbers = redis_policy_numbers(layers.resolve_with(key, nullptr));
    auto call = make_call(script, key, numbers, args, source);
    call->wait = std::move(ticket);
    send(std::move(call), [script, &layers, key = std::string(key), done = std::move(answer)](
                              const redisReply* reply, OpOutcome failure) mutable {
        if (!reply) {
            done(std::move(failure));
            return;
        }
        if (script == RedisFunction::Import || script == RedisFunction::Sweep) {
            done(OpOutcome{});
            return;
        }
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1) {
            done(unexpected_answer());
            return;
        }
        OpOutcome out;
        if (script == RedisFunction::Policy) {
            if (reply->elements != 1 + kPolicyFieldCount) {
                done(unexpected_answer());
                return;
            }
            PolicyPatch own; // the key's override in Redis (the script checked it)
            for (std::size_t i = 0; i < kPolicyFieldCount; ++i)
                if (!str(reply->element[i + 1]).empty())
                    own.values[i] = num(reply->element[i + 1]);
            out.result = PolicyResult{std::nullopt, layers.resolve_with(key, &own)};
            done(std::move(out));
            return;
        }
        if (script == RedisFunction::Reset) {
            out.result = ResetResult{reply->elements >= 2 && num(reply->element[1]) != 0};
            done(std::move(out));
            return;
        }
        if (reply->elements != kResFieldCount) {
            done(unexpected_answer());
            return;
        }
        done(circuit_answer(script, reply->element));
    });
}

// A list page: calls of at most kRedisScanPerCall keys each, asking for one
// match more than the page holds, so that a page that ends exactly at the
// last match has no `next` (as in memory).
void RedisStore::list_step(std::shared_ptr<ListJob> job) {
    if (job->limit == 0) {
        OpOutcome empty;
        empty.result = ListPage{};
        job->done(std::move(empty));
        return;
    }
    const std::size_t want = job->limit + 1 - job->page.circuits.size();
    const std::size_t budget = std::min(kRedisScanPerCall, kMaxListScan - job->examined);
    send(make_call(
             RedisFunction::List, "", Policy{},
             {job->prefix, job->after, std::to_string(want), job->state, std::to_string(budget)},
             job->source),
         [this, job](const redisReply* reply, OpOutcome failure) {
             if (!reply) {
                 job->done(later_step_failure(job->stepped, std::move(failure)));
                 return;
             }
             constexpr std::size_t kEntry = 1 + kRedisCircuitFieldCount;
             if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
                 (reply->elements - 3) % kEntry != 0) {
                 job->done(unexpected_answer());
                 return;
             }
             const bool more = str(reply->element[0]) == kRedisPageMore;
             const std::string last(str(reply->element[1]));
             job->examined +=
                 static_cast<std::size_t>(std::max<std::int64_t>(0, num(reply->element[2])));
             for (std::size_t i = 3; i + kEntry <= reply->elements; i += kEntry)
                 job->page.circuits.push_back(ListEntry{std::string(str(reply->element[i])),
                                                        view_from_fields(reply->element + i + 1)});
             auto& page = job->page;
             if (page.circuits.size() > job->limit) {
                 page.circuits.resize(job->limit); // the look-ahead match
                 page.next = page.circuits.back().key;
             } else if (more && job->examined >= kMaxListScan) {
                 page.next = page.circuits.size() == job->limit ? page.circuits.back().key : last;
             } else if (more && !last.empty() && last > job->after) {
                 job->after = last;
                 job->stepped = true;
                 list_step(job);
                 return;
             }
             OpOutcome r;
             r.result = std::move(page);
             job->done(std::move(r));
         });
}

void RedisStore::export_step(std::shared_ptr<ExportJob> job) {
    if (job->limit == 0) {
        OpOutcome empty;
        empty.result = ExportPage{};
        job->done(std::move(empty));
        return;
    }
    const std::size_t want = job->limit + 1 - job->page.circuits.size();
    send(make_call(RedisFunction::Export, "", Policy{},
                   {job->prefix, job->after, std::to_string(want)}, job->source),
         [this, job](const redisReply* reply, OpOutcome failure) {
             if (!reply) {
                 job->done(later_step_failure(job->stepped, std::move(failure)));
                 return;
             }
             constexpr std::size_t kEntry = 1 + kRedisCircuitFieldCount + kPolicyFieldCount;
             if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
                 (reply->elements - 2) % kEntry != 0) {
                 job->done(unexpected_answer());
                 return;
             }
             const bool more = str(reply->element[0]) == kRedisPageMore;
             const std::string last(str(reply->element[1]));
             for (std::size_t i = 2; i + kEntry <= reply->elements; i += kEntry) {
                 StoredCircuit record;
                 record.key = std::string(str(reply->element[i]));
                 if (!str(reply->element[i + 1]).empty())
                     record.circuit = view_from_fields(reply->element + i + 1);
                 for (std::size_t f = 0; f < kPolicyFieldCount; ++f) {
                     const auto* v = reply->element[i + 1 + kRedisCircuitFieldCount + f];
                     if (!str(v).empty())
                         record.policy.values[f] = num(v);
                 }
                 job->page.circuits.push_back(std::move(record));
             }
             auto& page = job->page;
             if (page.circuits.size() > job->limit) {
                 page.circuits.resize(job->limit);
                 page.next = page.circuits.back().key;
             } else if (more && !last.empty() && last > job->after) {
                 job->after = last;
                 job->stepped = true;
                 export_step(job);
                 return;
             }
             OpOutcome r;
             r.result = std::move(page);
             job->done(std::move(r));
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
        if (kind == kRedisEventReset) {
            observer_->on_reset(key, event_int(event.at(2)));
            return;
        }
        if (kind != kRedisEventTransition || event.size() != 17)
            return;
        TransitionRecord t{
            parse_state(event[2].get<std::string>()).value_or(State::Closed),
            parse_state(event[3].get<std::string>()).value_or(State::Closed),
            cause_named(event[5].get<std::string>()).value_or(TransitionCause::Manual),
            event_int(event[4]), static_cast<std::uint64_t>(event_int(event[6]))};
        CircuitView v;
        v.snapshot = Snapshot{parse_state(event[7].get<std::string>()).value_or(State::Closed),
                              static_cast<std::uint64_t>(event_int(event[8])),
                              static_cast<std::uint64_t>(event_int(event[9])), event_int(event[10]),
                              event_int(event[11])};
        v.generation = t.generation;
        if (auto pin = parse_state(event[12].get<std::string>())) {
            ForcePin p{*pin, event_int(event[13]), event[14].get<std::string>(), Peer{}};
            p.by.uid = static_cast<uid_t>(event_int(event[15]));
            p.by.pid = static_cast<pid_t>(event_int(event[16]));
            v.forced = std::move(p);
        }
        observer_->on_transition(key, t, v);
    } catch (const nlohmann::json::exception& e) {
        log_warn(std::string("Redis backend: an event that does not parse: ") + e.what());
    }
}

std::shared_ptr<RedisStore::WaitTicket>
RedisStore::enroll_wait(std::shared_ptr<WaitTicket> ticket) {
    if (!open_batch_) {
        open_batch_ = std::make_shared<WaitBatch>();
        open_batch_->first = std::chrono::steady_clock::now();
    }
    ticket->batch = open_batch_;
    open_batch_->tickets.push_back(ticket);
    schedule_wait();
    return ticket;
}

void RedisStore::schedule_wait() {
    // One WAIT at a time: while one blocks the connection, the scripts sent
    // meanwhile gather in the open batch and get the next one. A WAIT sent
    // behind a blocked one would start its clock late and outlive its
    // deadline.
    if (wait_in_flight_ || wait_posted_ || !open_batch_)
        return;
    wait_posted_ = true;
    // Posted: the scripts sent in this turn of the loop share the WAIT.
    boost::asio::post(io_, [this] {
        wait_posted_ = false;
        if (open_batch_ && !wait_in_flight_)
            send_wait(std::exchange(open_batch_, nullptr));
    });
}

void RedisStore::answer_ticket(const std::shared_ptr<WaitTicket>& ticket, OpOutcome result) {
    if (ticket->delivered)
        return;
    // Redis did not answer: the WAIT behind it fails too; say so now.
    if (result.error() == ErrorCode::BackendUnavailable) {
        ticket->delivered = true;
        auto done = std::move(ticket->done);
        done(std::move(result));
        return;
    }
    if (!ticket->batch || ticket->batch->answered) {
        // The script ran after its batch's WAIT (sent again after NOSCRIPT):
        // a later WAIT must cover it.
        ticket->result = std::move(result);
        enroll_wait(ticket);
        return;
    }
    ticket->result = std::move(result);
}

void RedisStore::send_wait(std::shared_ptr<WaitBatch> batch) {
    wait_in_flight_ = true;
    const auto timeout = options_.connection.timeout;
    const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - batch->first);
    // What is left of the operations' deadline, less a margin: Redis starts
    // the WAIT's clock when it gets to it and notices its end only when its
    // event loop next wakes (up to 100 ms at the default hz), and the
    // answer must come before the connection's own deadline for it, or the
    // connection would be dropped for a missing replica.
    const auto margin =
        std::min(timeout / 2, std::max(timeout / 10, std::chrono::milliseconds(200)));
    const auto wait_ms = std::max<std::int64_t>(1, (timeout - margin - elapsed).count());
    const auto want = options_.min_replicas;
    auto finish = [this, batch](std::optional<std::string> failure) {
        wait_in_flight_ = false;
        batch->answered = true;
        for (auto& ticket : batch->tickets) {
            if (ticket->delivered || !ticket->result || ticket->batch != batch)
                continue; // answered already, or its script is still to come
            ticket->delivered = true;
            auto done = std::move(ticket->done);
            if (!failure) {
                done(std::move(*ticket->result));
                continue;
            }
            stats_.unavailable += 1;
            stats_.replication_failures += 1;
            done(outage(*failure));
        }
        // Tickets hold their batch: the batch lets go of them, so neither
        // keeps the other (a ticket still to answer re-enrolls elsewhere).
        batch->tickets.clear();
        schedule_wait();
    };
    const auto n = std::to_string(want);
    const auto ms = std::to_string(wait_ms);
    commands_.command({"WAIT", n, ms}, [this, finish, want](const redisReply* reply,
                                                            const std::string& error) {
        if (!reply) {
            finish("no answer to WAIT: " + error + "; the change may have been applied");
            return;
        }
        if (reply->type == REDIS_REPLY_ERROR) {
            const std::string text(reply->str, reply->len);
            finish("Redis answered WAIT: " + text + "; the change may have been applied");
            if (discovery_)
                commands_.drop("WAIT refused: " + text); // a replica answers WAIT so
            return;
        }
        const auto acked = reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;
        if (acked >= static_cast<long long>(want)) {
            finish(std::nullopt);
            return;
        }
        const std::string message = std::to_string(std::max<long long>(0, acked)) + " of " +
                                    std::to_string(want) +
                                    " replicas acknowledged the change within the backend timeout "
                                    "(--redis-min-replicas); the change may have been applied";
        if (message != last_logged_error_) {
            last_logged_error_ = message;
            log_warn("Redis backend: " + message);
        }
        stats_.last_error = message;
        finish(message);
    });
}

void RedisStore::set_policy_digest(std::string digest) {
    policy_digest_ = std::move(digest);
    stats_.policy_digest = policy_digest_;
    next_exchange_ = {}; // publish the new one at the next sweep
}

void RedisStore::exchange_policy_digest() {
    if (exchanging_ || policy_digest_.empty() || options_.instance.empty())
        return;
    exchanging_ = true;
    const std::string key = options_.prefix + "policy-digests";
    // Redis's clock for every entry, as for the circuits: hosts whose
    // clocks disagree still agree on which entries are live.
    commands_.command({"TIME"}, [this, key](const redisReply* reply, const std::string&) {
        if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
            exchanging_ = false;
            return;
        }
        const std::int64_t now_ms = num(reply->element[0]) * 1000 + num(reply->element[1]) / 1000;
        const auto entry = policy_entry(policy_digest_, now_ms);
        commands_.command({"HSET", key, options_.instance, entry},
                          [](const redisReply*, const std::string&) {});
        // HSCAN with a COUNT bounds what one round reads however many
        // entries the hash holds.
        commands_.command(
            {"HSCAN", key, "0", "COUNT", std::to_string(kMaxPolicyHosts)},
            [this, key, now_ms](const redisReply* scan, const std::string&) {
                exchanging_ = false;
                if (!scan || scan->type != REDIS_REPLY_ARRAY || scan->elements != 2 ||
                    scan->element[1]->type != REDIS_REPLY_ARRAY)
                    return;
                const redisReply* fields = scan->element[1];
                std::vector<std::pair<std::string, std::string>> entries;
                for (std::size_t i = 0;
                     i + 1 < fields->elements && entries.size() < kMaxPolicyHosts; i += 2)
                    entries.emplace_back(std::string(str(fields->element[i])),
                                         std::string(str(fields->element[i + 1])));
                note_policy_mismatches(
                    policy_mismatches(options_.instance, policy_digest_, now_ms, entries));
                const auto gone = forgotten_policy_hosts(now_ms, entries);
                if (!gone.empty()) {
                    std::vector<std::string_view> argv{"HDEL", key};
                    argv.insert(argv.end(), gone.begin(), gone.end());
                    commands_.command(argv, [](const redisReply*, const std::string&) {});
                }
            });
    });
}

void RedisStore::note_policy_mismatches(std::vector<std::string> hosts) {
    auto& known = stats_.policy_mismatch_hosts;
    const bool news = std::any_of(hosts.begin(), hosts.end(), [&](const std::string& h) {
        return std::find(known.begin(), known.end(), h) == known.end();
    });
    if (news) {
        std::string list;
        for (const auto& h : hosts)
            list += (list.empty() ? "" : ", ") + h;
        log_warn("policy: the defaults and prefix rules of " + list +
                 " differ from this host's (digest " + policy_digest_ +
                 "), so one circuit gets different rules by host; give every cbd on this Redis "
                 "the same configuration");
    } else if (hosts.empty() && !known.empty()) {
        log_info("policy: every live cbd on this Redis has this host's defaults and prefix rules "
                 "again");
    }
    known = std::move(hosts);
}

bool redis_function_mutates(RedisFunction script, const std::vector<std::string>& args) {
    switch (script) {
    case RedisFunction::Success:
    case RedisFunction::Failure:
    case RedisFunction::Transition:
    case RedisFunction::Reset:
    case RedisFunction::Acquire:
    case RedisFunction::Report:
    case RedisFunction::Force:
    case RedisFunction::Unforce:
    case RedisFunction::Import:
        return true;
    case RedisFunction::Policy:
        // ARGV: clear, then per field "" (keep), "-" (remove) or a value.
        return std::any_of(args.begin(), args.end(), [&](const std::string& a) {
            return &a == &args.front() ? a == kRedisArgTrue : !a.empty();
        });
    case RedisFunction::Get:
    case RedisFunction::List:
    case RedisFunction::Sweep:
    case RedisFunction::Export:
        return false;
    }
    return true;
}

std::size_t redis_function_weight(RedisFunction function) {
    switch (function) {
    case RedisFunction::List:
        return kRedisScanPerCall; // keys examined (HMGET each)
    case RedisFunction::Export:
        return 2 * kRedisScanPerCall; // from both indexes
    case RedisFunction::Sweep:
        return kRedisSweepPerCall;
    default:
        return 1;
    }
}

Policy redis_policy_numbers(const ResolvedPolicy& daemon) {
    Policy p = daemon.policy;
    if (!daemon.lease_set)
        p.set(PolicyField::ProbeLeaseMs,
              0); // not a valid lease (1..): the scripts' sign to derive it
    if (!daemon.timeout_max_set)
        p.set(PolicyField::ResetTimeoutMaxMs, 0); // likewise: no layer sets a backoff
    return p;
}

} // namespace cbd
