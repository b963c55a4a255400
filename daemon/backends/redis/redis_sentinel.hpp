// Redis Sentinel, the pure parts: the sentinel:// address, what a sentinel
// or a Redis answers about who the master is (checked, never trusted), and
// which sentinel to ask next. No I/O here; sentinel_discovery.hpp does the
// asking.
#pragma once

#include "daemon/backends/redis/redis_connection.hpp"

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct redisReply;

namespace cbd {

// More sentinels than anyone deploys (three or five); a bound so that a
// long flag cannot make cbd open connections without end.
inline constexpr std::size_t kMaxSentinels = 16;
// Sentinel master names are config-file words; longer is a mistake.
inline constexpr std::size_t kMaxSentinelMasterName = 128;

// sentinel://IP:PORT[,IP:PORT...]/MASTERNAME
struct SentinelAddress {
    std::vector<RedisEndpoint> sentinels; // tcp endpoints, in the order given
    std::string master_name;

    // Returns the error, or nullopt with `out` filled.
    static std::optional<std::string> parse(std::string_view url, SentinelAddress& out);
    std::string describe() const;
};

inline bool is_sentinel_url(std::string_view url) {
    return url.starts_with("sentinel://");
}

// A sentinel's answer to SENTINEL get-master-addr-by-name: two strings, an
// IP and a port. nullopt with `error` set when it is anything else (nil: the
// sentinel does not know the name; a host name; garbage).
std::optional<RedisEndpoint> master_from_sentinel_reply(const redisReply* reply,
                                                        std::string& error);

// A +switch-master message on a sentinel's pub/sub:
// ["message", "+switch-master", "NAME OLDIP OLDPORT NEWIP NEWPORT"].
// The new master when it is for `master_name`; nullopt otherwise, with
// `error` set when the message is for us but does not parse (a message for
// another master leaves `error` empty).
std::optional<RedisEndpoint> master_from_switch_message(const redisReply* reply,
                                                        std::string_view master_name,
                                                        std::string& error);

// What ROLE says a Redis is: "master", "slave", "sentinel", or nullopt with
// `error` when the reply is not a ROLE reply.
std::optional<std::string> role_from_reply(const redisReply* reply, std::string& error);

// Asks the sentinels in turn: the one that answered last keeps being asked;
// one that fails (unreachable, slow, garbage) gives way to the next.
class SentinelRotation {
  public:
    explicit SentinelRotation(std::size_t count, std::size_t start = 0)
        : count_(count), current_(count ? start % count : 0) {}
    std::size_t current() const { return current_; }
    // The sentinel after the current one (wrapping), which becomes current.
    std::size_t advance() {
        current_ = count_ ? (current_ + 1) % count_ : 0;
        return current_;
    }

  private:
    std::size_t count_;
    std::size_t current_;
};

// Where the master is, and whether an answer means cbd must move.
class MasterFollower {
  public:
    const std::optional<RedisEndpoint>& master() const { return master_; }
    std::uint64_t failovers() const { return failovers_; }
    // An address the sentinels gave (asked, or announced): true when it is
    // not where cbd is now, so the connections must move to it. The first
    // address is not a failover; every later change is one.
    bool should_switch(const RedisEndpoint& named) const;
    // Records the move (after should_switch said so).
    void switched(const RedisEndpoint& to);

  private:
    std::optional<RedisEndpoint> master_;
    std::uint64_t failovers_ = 0;
};

bool same_endpoint(const RedisEndpoint& a, const RedisEndpoint& b);

} // namespace cbd
