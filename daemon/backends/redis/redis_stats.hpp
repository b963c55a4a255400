// How the Redis backend is doing: RedisStore counts, and the counts describe
// themselves as the `backend` section of `stats` and the cbd_backend_*
// metrics (docs/REDIS.md).
#pragma once

#include "daemon/dispatch/stats.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace cbd {

struct RedisStats final : StatsSection {
    std::string address; // unix:///…, tcp://… or sentinel://…/NAME, as configured
    bool up = false;
    std::uint64_t disconnects = 0; // times the connection was lost or never came up
    std::uint64_t unavailable = 0; // operations answered backend_unavailable
    // Of them, those never sent (surely not applied): they waited in the
    // send queue past their deadline (`expired` counts these alone), found
    // it full, or cbd was stopping.
    std::uint64_t unsent = 0;
    std::uint64_t expired = 0;
    // The send queue now: calls waiting in cbd, and calls sent to Redis
    // and not yet answered.
    std::size_t queued = 0;
    std::size_t in_flight = 0;
    std::string redis_version; // as INFO server names it, once connected
    // The events connection (pub/sub: transitions made by any cbd).
    bool events_up = false;
    std::uint64_t events_disconnects = 0;
    std::string last_error;
    // The Redis cbd uses now (with sentinel://, the master the sentinels
    // named; empty until one is known), and how often it moved to another.
    std::string master;
    bool sentinel = false;
    std::uint64_t failovers = 0;
    // --redis-min-replicas, and changes answered backend_unavailable because
    // fewer replicas acknowledged them in time (counted in `unavailable` too).
    std::size_t min_replicas = 0;
    std::uint64_t replication_failures = 0;
    // Other live hosts on the same Redis and prefix whose policy digest
    // (defaults and prefix rules) differs from this one's (policy_digest.hpp).
    std::vector<std::string> policy_mismatch_hosts;
    std::string policy_digest; // this daemon's

    void write_json(nlohmann::json& object) const override;
    void write_metrics(Exposition& metrics) const override;
};

} // namespace cbd
