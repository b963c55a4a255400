// The Redis backend (--backend redis): circuits live in Redis, and every
// operation is one function of cbd's Functions library (cbd_functions.lua)
// called by FCALL, so each is atomic across every cbd on every host that
// shares the Redis. Operations wait in a send queue in cbd (never in
// Redis), and those waiting together go as one batch call. Answers
// come back later, on the event loop; the dispatcher turns them into the
// same replies the memory store gives. Transitions made anywhere come back
// through Redis pub/sub and go to this daemon's EventHub (log, counters,
// watchers).
#pragma once

#include "daemon/backends/redis/redis_connection.hpp"
#include "daemon/backends/redis/redis_functions.hpp"
#include "daemon/backends/redis/redis_send_queue.hpp"
#include "daemon/backends/redis/redis_sentinel.hpp"
#include "daemon/backends/redis/redis_stats.hpp"
#include "daemon/backends/redis/sentinel_discovery.hpp"
#include "daemon/breaker/circuit_store.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/dispatch/circuit_backend.hpp"

#include <array>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace cbd {

struct RedisStoreOptions {
    RedisOptions connection; // with `sentinel`, the endpoint is found, not given
    // --redis sentinel://...: the master is the one the sentinels name (and
    // ROLE confirms), followed through failovers.
    std::optional<SentinelOptions> sentinel;
    // --redis-min-replicas: a change is acknowledged only once this many
    // replicas have it (WAIT); 0 acknowledges what the master applied.
    std::size_t min_replicas = 0;
    // This cbd in the policy digest exchange (policy_digest.hpp): the host
    // name and the socket path, so two daemons on one host are two entries.
    std::string instance;
    std::string prefix = "cbd:";                    // every key this daemon uses starts so
    std::size_t max_circuits = kDefaultMaxCircuits; // in the shared store
    // cbd --test-clock: every script (the sweep too) takes its time from
    // this clock instead of Redis's TIME, so tests can step time. Null in
    // production.
    const Clock* test_clock = nullptr;
};

class RedisStore {
  public:
    RedisStore(boost::asio::io_context& io, RedisStoreOptions options, CircuitObserver* observer);

    void start();
    void stop();
    // Settles expired leases and pins in Redis (run from the expiry timer).
    void sweep();

    // Runs `script` for `key` with the policy `layers` (the daemon's
    // defaults and prefix rules) resolve for it, a key override in Redis
    // winning, and the operation's own arguments. The answer is the
    // operation's result as the memory store gives it (the `policy` script's
    // is the override laid over `layers`), or its failure: BackendUnavailable
    // (an outage: Redis unreachable, slow, loading...), BackendError (Redis
    // answered, but what it holds for the key cannot be used, or a limit such
    // as the generation counter's is reached: not an outage, not retried),
    // TooManyCircuits or InvalidRequest, each with its message.
    // `list` and `export` run as several script calls, each examining at
    // most kRedisScanPerCall keys, joined before `done` runs. `done` runs
    // exactly once, on the event loop, and never throws out of here.
    // `layers` must outlive the answer. `source` is the client connection
    // (Peer::connection; 0: cbd's own), whose calls take their turn in the
    // send queue (redis_send_queue.hpp) with the other connections'. A call
    // that waited there past --backend-timeout is answered
    // BackendUnavailable, surely not applied (OpOutcome::surely_not_applied).
    void run(RedisFunction script, std::string_view key, const PolicySet& layers,
             const std::vector<std::string>& args, std::uint64_t source,
             std::function<void(OpOutcome)> done);

    // Circuits in the shared store as of the last sweep (every 100 ms):
    // total from the index; by state and pinned from counters the scripts
    // keep (exact while only cbd writes the keys).
    std::optional<CircuitCounts> counts() const { return counts_; }

    // The digest of this daemon's defaults and prefix rules (at start and
    // after each SIGHUP), published for the other hosts to compare.
    void set_policy_digest(std::string digest);

    // The `backend` section of `stats` and the metrics.
    const RedisStats& stats() const { return stats_; }

  private:
    struct Call;
    struct Flight;
    struct ListJob;
    struct ExportJob;
    struct WaitBatch;
    struct WaitTicket;
    using ReplyHandler = std::function<void(const redisReply* reply, OpOutcome failure)>;

    void on_event(const redisReply* reply);
    using SendQueue = RedisSendQueue<std::shared_ptr<Call>>;

    // What every new command connection sends first: the version check and
    // FUNCTION LOAD (and ROLE, with Sentinel).
    RedisConnection::Setup connection_setup();
    std::shared_ptr<Call> make_call(RedisFunction function, std::string_view key,
                                    const Policy& policy, const std::vector<std::string>& args,
                                    std::uint64_t source) const;
    // Queues a call; `then` gets the reply, or nullptr and the failure,
    // exactly once.
    void send(std::shared_ptr<Call> call, ReplyHandler then);
    // Answers a call that was never sent: BackendUnavailable, surely not
    // applied, saying `why`.
    // `sent`: it reached Redis, which refused to run it.
    void refuse(Call& call, const std::string& why, bool sent = false);
    // Sends what waits, while fewer than kRedisInFlight calls are in flight,
    // in batches of at most kRedisBatchMax (posted: once per turn).
    // The connection went down: every waiting call is answered, unsent.
    void refuse_waiting(const std::string& why);
    void schedule_pump();
    void pump();
    void transmit(std::shared_ptr<Flight> flight);
    // Whether a call of the same client connection as one in `flight` is
    // in flight after it (so resending `flight` would reorder them).
    bool overtaken(const Flight& flight) const;
    // Hands a call its reply (or nullptr and `error`), sorting Redis's error
    // replies into the failures run() documents.
    void answer(Call& call, const redisReply* reply, const std::string& error);
    // The timer for the first deadline in the queue.
    void arm_expiry();
    void list_step(std::shared_ptr<ListJob> job);
    void export_step(std::shared_ptr<ExportJob> job);
    void note_backend_error(const std::string& message);
    // A master the sentinels named: moves both connections there when it is
    // not where they are (logged once per switch).
    void on_master_named(const RedisEndpoint& master, const std::string& how);
    // --redis-min-replicas: the ticket's answer waits for the WAIT that
    // follows its script on the connection. Scripts sent in one turn of the
    // event loop share one WAIT, pipelined behind them.
    std::shared_ptr<WaitTicket> enroll_wait(std::shared_ptr<WaitTicket> ticket);
    void schedule_wait();
    void send_wait(std::shared_ptr<WaitBatch> batch);
    // Writes this daemon's policy digest and reads the other hosts' (every
    // kPolicyDigestIntervalMs, from the sweep).
    void exchange_policy_digest();
    void note_policy_mismatches(std::vector<std::string> hosts);
    void answer_ticket(const std::shared_ptr<WaitTicket>& ticket, OpOutcome result);

    boost::asio::io_context& io_;

    RedisStoreOptions options_;
    RedisStats stats_;
    CircuitObserver* observer_;
    SendQueue queue_;
    boost::asio::steady_timer expiry_;
    bool expiry_armed_ = false;
    bool pump_posted_ = false;
    bool stopped_ = false;
    std::deque<std::shared_ptr<Flight>> outstanding_; // sent, not answered, in order
    std::size_t in_flight_ = 0;                       // weight of the calls sent, not yet answered
    std::size_t reads_in_flight_ = 0;                 // of it, clients' reads
    bool sweeping_ = false;
    std::optional<CircuitCounts> counts_; // none until the first sweep answers
    std::string last_logged_error_;       // a bad key is logged once, not per request
    MasterFollower follower_;
    std::shared_ptr<WaitBatch> open_batch_; // its WAIT is not sent yet
    bool wait_in_flight_ = false;           // a WAIT is out; the next waits for its answer
    bool wait_posted_ = false;
    std::string policy_digest_;
    std::chrono::steady_clock::time_point next_exchange_{};
    bool exchanging_ = false;
    RedisConnection commands_;
    RedisConnection events_;
    std::unique_ptr<SentinelDiscovery> discovery_; // with --redis sentinel://
};

// Whether a script call can change what Redis holds for a client, so that
// --redis-min-replicas waits for it: every circuit write, configure (not a
// policy read), import. `get` does not wait: what it may settle (an expired
// lease or pin) the next operation settles again on any master; the sweep
// likewise.
bool redis_function_mutates(RedisFunction script, const std::vector<std::string>& args);

// What one call of `function` may cost Redis, in single circuit operations:
// the send queue bounds the weight in flight, so that what Redis holds for
// cbd stays a few milliseconds of work.
std::size_t redis_function_weight(RedisFunction function);

// The policy numbers run() passes a script for a key whose daemon-side policy
// (defaults, prefix rules) is `daemon`: as resolved, except probeLeaseMs 0
// when no layer sets it, so that the script derives the lease from the reset
// timeout after the key's own override, as PolicySet does. (The `policy`
// reply lays the override over the same layers with
// PolicySet::resolve_with(), the one place that rule lives in C++.)
Policy redis_policy_numbers(const ResolvedPolicy& daemon);

} // namespace cbd
