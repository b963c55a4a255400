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
#include <string_view>
#include <variant>

namespace cbd {

// An operation that failed as a whole, before or after its store answered:
// Redis unavailable, a commit undone, a batch entry the parser refused, a
// refused import or configure. Its reply is the error alone.
struct OpFailure {
    ErrorCode code;
    // Surely not applied: the operation never reached anything that could
    // apply it (it waited in cbd's send queue past its deadline). The reply
    // says so ("applied": false), so a client may simply retry.
    bool surely_not_applied = false;
};

// What a backend answers to one circuit operation: the result its store
// gives for it, of that operation's own type (what CircuitStore returns for
// it; the Redis store parses its scripts' answers into the same types), or
// the failure that stopped it. std::monostate: answered, with nothing to
// show (import, whose reply is the record it was sent).
struct OpOutcome {
    std::variant<std::monostate, OpFailure, StoreResult, AcquireResult, ReportResult, ResetResult,
                 PolicyResult, ListPage, ExportPage>
        result;
    std::string error_message; // why, when the backend knows better than the code

    // The failure's code, or the result's own error (a circuit's refusal).
    std::optional<ErrorCode> error() const;
    // Makes this a failure; an empty `message` leaves the reply to say what
    // the code means.
    void fail(ErrorCode code, std::string_view message = {});
    // A failure that surely did not apply the operation (OpFailure).
    void fail_unapplied(ErrorCode code, std::string_view message);
    bool surely_not_applied() const;
    // Back to the defaults, keeping error_message's buffer (the dispatcher
    // reuses one outcome).
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
