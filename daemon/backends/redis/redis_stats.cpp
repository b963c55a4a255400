// RedisStats (see redis_stats.hpp).
#include "daemon/backends/redis/redis_stats.hpp"

#include "daemon/dispatch/metrics.hpp"

#include <nlohmann/json.hpp>

namespace cbd {

void RedisStats::write_json(nlohmann::json& object) const {
    object["kind"] = "redis";
    object["address"] = address;
    object["up"] = up;
    object["disconnects"] = disconnects;
    object["unavailable"] = unavailable;
    object["unsent"] = unsent;
    object["expired"] = expired;
    object["queued"] = queued;
    object["inFlight"] = in_flight;
    object["redisVersion"] = text_or_null(redis_version);
    object["eventsUp"] = events_up;
    object["eventsDisconnects"] = events_disconnects;
    object["lastError"] = text_or_null(last_error);
    // Sentinel, replication and policy agreement (docs/REDIS.md).
    object["master"] = text_or_null(master);
    object["sentinel"] = sentinel;
    object["failovers"] = failovers;
    object["minReplicas"] = min_replicas;
    object["replicationFailures"] = replication_failures;
    object["policyDigest"] = text_or_null(policy_digest);
    object["policyMismatch"] = policy_mismatch_hosts;
}

void RedisStats::write_metrics(Exposition& m) const {
    m.family("cbd_backend_up", "gauge", "1 while the connection to the backend is up.");
    m.sample("cbd_backend_up", metric_label("kind", "redis"), up ? 1 : 0);
    m.family("cbd_backend_disconnects_total", "counter",
             "Times the backend connection was lost or could not be made.");
    m.sample("cbd_backend_disconnects_total", "", disconnects);
    m.family("cbd_backend_unavailable_total", "counter",
             "Operations answered backend_unavailable.");
    m.sample("cbd_backend_unavailable_total", "", unavailable);
    m.family("cbd_backend_unsent_total", "counter",
             "Operations answered backend_unavailable without being sent to Redis (surely not "
             "applied): past their deadline in the send queue, the queue full, or stopping.");
    m.sample("cbd_backend_unsent_total", "", unsent);
    m.family("cbd_backend_expired_total", "counter",
             "Operations that waited in the send queue past --backend-timeout (counted in "
             "unsent too).");
    m.sample("cbd_backend_expired_total", "", expired);
    m.family("cbd_backend_queued", "gauge", "Operations waiting in cbd to be sent to Redis.");
    m.sample("cbd_backend_queued", "", static_cast<std::uint64_t>(queued));
    m.family("cbd_backend_in_flight", "gauge", "Operations sent to Redis and not yet answered.");
    m.sample("cbd_backend_in_flight", "", static_cast<std::uint64_t>(in_flight));
    m.family("cbd_backend_events_up", "gauge",
             "1 while the events connection (transitions by every cbd) is up.");
    m.sample("cbd_backend_events_up", "", events_up ? 1 : 0);
    m.family("cbd_backend_events_disconnects_total", "counter",
             "Times the events connection was lost or could not be made: transitions made "
             "meanwhile were not seen by this cbd's watchers.");
    m.sample("cbd_backend_events_disconnects_total", "", events_disconnects);
    m.family("cbd_backend_failovers_total", "counter",
             "Times cbd moved to another Redis master (Sentinel).");
    m.sample("cbd_backend_failovers_total", "", failovers);
    m.family("cbd_backend_master", "gauge", "1, labelled with the Redis master cbd uses now.");
    m.sample("cbd_backend_master", metric_label("address", master), master.empty() ? 0 : 1);
    m.family("cbd_backend_replication_failures_total", "counter",
             "Changes answered backend_unavailable because fewer than --redis-min-replicas "
             "replicas acknowledged them.");
    m.sample("cbd_backend_replication_failures_total", "", replication_failures);
    m.family("cbd_policy_config_mismatch", "gauge",
             "1 while another live cbd on the same Redis and prefix has other defaults or "
             "prefix rules.");
    m.sample("cbd_policy_config_mismatch", "", policy_mismatch_hosts.empty() ? 0 : 1);
}

} // namespace cbd
