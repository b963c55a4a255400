// Finding and following the Redis master through Sentinel
// (--redis sentinel://...). Two connections to the sentinels, each moving to
// the next sentinel when its own fails: one asks
// `SENTINEL get-master-addr-by-name` (at start, while the master connection
// is down or refused, and every few seconds besides), the other is
// subscribed to `+switch-master`. Every address a sentinel gives is checked
// (redis_sentinel.hpp) and handed to `on_master`; the store then checks it
// with ROLE as it connects. Nothing here queues operations: while no master
// is usable the store answers backend_unavailable at once.
#pragma once

#include "daemon/backends/redis/redis_connection.hpp"
#include "daemon/backends/redis/redis_sentinel.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <string>

namespace cbd {

struct SentinelOptions {
    SentinelAddress address;
    std::string password; // --redis-sentinel-password-file; empty: no AUTH
    std::chrono::milliseconds timeout{1000};
};

class SentinelDiscovery {
  public:
    // A master the sentinels named, and how cbd learnt of it ("sentinel
    // 127.0.0.1:26379 announced +switch-master"). May name the master cbd
    // already uses; the caller decides (MasterFollower).
    using OnMaster = std::function<void(const RedisEndpoint& master, const std::string& how)>;

    SentinelDiscovery(boost::asio::io_context& io, SentinelOptions options, OnMaster on_master);

    void start();
    void stop();
    // The store's master connection went down or was refused (false), or is
    // up and checked (true). While it is not, the sentinels are asked often.
    void master_usable(bool usable);

  private:
    void schedule_ask(std::chrono::milliseconds after);
    void ask();
    // A reply on the subscription: +switch-master for our master, or not.
    void on_message(const redisReply* reply);
    void note_problem(const std::string& message);

    SentinelOptions options_;
    OnMaster on_master_;
    SentinelRotation query_rotation_;
    SentinelRotation subscription_rotation_;
    RedisConnection query_;
    RedisConnection subscription_;
    boost::asio::steady_timer ask_timer_;
    bool master_usable_ = false;
    bool asking_ = false; // one question at a time
    bool stopped_ = false;
    std::string last_problem_; // logged once, not every 250 ms
};

} // namespace cbd
