// The Redis backend (--backend redis): circuits live in Redis, and every
// operation is one Lua script (redis_scripts.cpp) called by EVALSHA, so each
// is atomic across every cbd on every host that shares the Redis. Answers
// come back later, on the event loop; the dispatcher turns them into the
// same replies the memory store gives. Transitions made anywhere come back
// through Redis pub/sub and go to this daemon's EventHub (log, counters,
// watchers).
#pragma once

#include "daemon/circuit_store.hpp"
#include "daemon/redis_connection.hpp"
#include "daemon/redis_scripts.hpp"
#include "daemon/stats.hpp"

#include <array>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace cbd {

struct RedisStoreOptions {
    RedisOptions connection;
    std::string prefix = "cbd:"; // every key this daemon uses starts so
    std::size_t max_circuits = kDefaultMaxCircuits; // in the shared store
};

// One script's answer, in the memory store's terms.
struct RemoteResult {
    std::optional<ErrorCode> error; // BackendUnavailable, or the script's own
    std::string unavailable_reason;
    CircuitView circuit;
    std::optional<TransitionRecord> transition;
    bool stale = false;
    std::int64_t extra1 = 0;  // acquire: allowed; reset: removed
    std::string extra2;       // acquire: permit
    std::int64_t extra3 = 0;  // acquire: retryAfterMs
    PolicyPatch policy_override; // policy script: the key's override in Redis
    ListPage page;               // list script
    ExportPage exported;         // export script
};

class RedisStore {
  public:
    RedisStore(boost::asio::io_context& io, RedisStoreOptions options, DaemonStats& stats,
               CircuitObserver* observer);

    void start();
    void stop();
    // Settles expired leases and pins in Redis (run from the expiry timer).
    void sweep();

    // Runs `script` for `key` with the policy the daemon resolves for it
    // (its defaults and prefix rules; a key override in Redis wins) and the
    // operation's own arguments.
    void run(RedisScript script, std::string_view key, const Policy& policy,
             const std::vector<std::string>& args, std::function<void(RemoteResult)> done);

  private:
    void on_event(const redisReply* reply);
    RedisConnection::Setup script_setup();

    RedisStoreOptions options_;
    DaemonStats& stats_;
    CircuitObserver* observer_;
    std::array<std::string, kRedisScriptCount> shas_; // from SCRIPT LOAD; empty until known
    bool sweeping_ = false;
    RedisConnection commands_;
    RedisConnection events_;
};

} // namespace cbd
