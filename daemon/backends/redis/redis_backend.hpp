// --backend redis behind the one backend interface (circuit_backend.hpp):
// each circuit operation becomes one RedisStore script call with the policy
// this daemon's own layers give the key (a key override kept in Redis wins,
// field by field, inside the script), which RedisStore answers as an
// OpOutcome. Every operation answers later, on the loop, when Redis does.
#pragma once

#include "daemon/backends/redis/redis_store.hpp"
#include "daemon/dispatch/circuit_backend.hpp"

namespace cbd {

class RedisBackend final : public CircuitBackend {
  public:
    explicit RedisBackend(RedisStore& redis) : redis_(redis) {}

    bool run(const Request& req, const Peer& peer, OpOutcome& now, Deferral& deferral) override;
    std::optional<CircuitCounts> counts() const override;
    bool list_now(const ListQuery&, ListPage&) override { return false; }
    // The other hosts on the Redis compare this one's digest with theirs.
    void set_policy_config(PolicyConfig config) override;
    void tick() override { redis_.sweep(); }

  private:
    RedisStore& redis_;
    // The daemon's layers only: key overrides live in Redis.
    PolicySet policies_;
};

} // namespace cbd
