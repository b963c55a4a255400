// The one interface the dispatcher sees for circuit operations, whatever
// holds the circuits. Each operation completes through a continuation:
// memory answers at once, durable mode once the group commit that makes the
// change survive a crash has landed, Redis once Redis answers. The
// dispatcher turns every outcome into a reply, an audit line and counters in
// one place, so nothing about a reply depends on the backend.
//
//   MemoryBackend   (backends/memory/memory_backend.*)   the in-process CircuitStore
//   DurableBackend  (backends/memory/durable_backend.*)  the same, answers held
//                                                        for the commit
//   RedisBackend    (backends/redis/redis_backend.*)     Lua scripts in a shared Redis
#pragma once

#include "common/request.hpp"
#include "daemon/breaker/circuit_store.hpp"
#include "daemon/breaker/policy_set.hpp"
#include "daemon/core/peer.hpp"

#include <functional>
#include <optional>
#include <string>

namespace cbd {

// What a backend answers to one circuit operation. Which fields mean
// something depends on the op; the rest stay at their defaults.
struct OpOutcome {
    std::optional<ErrorCode> error;
    std::string error_message; // why, when the backend knows better than the code
    CircuitView circuit;       // snapshot-bearing ops, and conflict/forced/no_permit
    std::optional<TransitionRecord> transition;
    bool stale = false;              // report
    bool allowed = false;            // acquire
    std::int64_t retry_after_ms = 0; // acquire, when denied
    std::string permit;              // acquire, a half-open probe's
    bool removed = false;            // reset
    ResolvedPolicy policy;           // policy, configure
    ListPage page;                   // list
    ExportPage exported;             // export

    // Back to the defaults, keeping buffers (the dispatcher reuses one).
    void clear();
};

// The answer to an operation the backend could not answer at once. Called
// exactly once, on the event loop.
using Completion = std::function<void(const OpOutcome&)>;

// What the dispatcher offers a backend that answers later: where the answer
// will go. Taken at most once per run().
class Deferral {
  public:
    virtual Completion later() = 0;

  protected:
    ~Deferral() = default;
};

// What an `import` request asks its key to hold.
StoredCircuit imported_record(const Request& req);

class CircuitBackend {
  public:
    virtual ~CircuitBackend() = default;

    // Runs one circuit operation for `peer`. Either fills `now` and returns
    // true, or takes deferral.later(), returns false and calls the
    // completion exactly once, later, on the loop. `req` is valid only
    // during the call: a backend that answers later copies what it needs.
    virtual bool run(const Request& req, const Peer& peer, OpOutcome& now, Deferral& deferral) = 0;

    // The circuits held, for stats and metrics. Redis answers the last count
    // it took (see RedisBackend); nullopt when it has none yet.
    virtual std::optional<CircuitCounts> counts() const = 0;
    // A page of circuits read at once, for per-circuit metrics; false when
    // the backend cannot answer without waiting (Redis).
    virtual bool list_now(const ListQuery& query, ListPage& page) = 0;

    // The daemon's policy layers (defaults and prefix rules), replaced whole
    // on SIGHUP.
    virtual void set_policy_config(PolicyConfig config) = 0;
    // Applies what time alone decides (expired leases and pins); the daemon
    // calls it every 100 ms.
    virtual void tick() = 0;
};

} // namespace cbd
