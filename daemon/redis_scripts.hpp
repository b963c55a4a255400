// The Lua scripts the Redis backend runs, one per operation, each atomic in
// Redis (docs/REDIS.md has the key layout). They follow memory_store.cpp
// rule for rule; time comes from Redis's TIME, so every host agrees.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace cbd {

enum class RedisScript : std::uint8_t {
    Get,
    Success,
    Failure,
    Transition,
    Reset,
    Acquire,
    Report,
    Force,
    Unforce,
    Policy, // configure (with changes) and policy (without)
    List,
    Sweep, // expired leases and pins of circuits nobody touches
    Export,
    Import,
};
inline constexpr std::size_t kRedisScriptCount = 14;

// Most keys one `list` page examines in Redis: a script blocks Redis while
// it runs, so pages are smaller there than in memory.
inline constexpr std::size_t kRedisMaxListScan = 10'000;

// The full Lua source of a script (shared prelude included). Loaded with
// SCRIPT LOAD on every new connection; its SHA-1 comes back from Redis.
const std::string& redis_script_source(RedisScript script);

// Keys a script is given, in order (KEYS[1..6]), for `key` under `prefix`.
// ARGV: the key, the five policy values, the operation's own, and last the
// most circuits the shared store may hold.
std::array<std::string, 6> redis_script_keys(std::string_view prefix, std::string_view key);

// What every script returns (an array), by index.
enum RedisResultField : std::size_t {
    kResStatus,     // "ok", "conflict", "forced", "no_permit", "stale"
    kResState,
    kResFailures,
    kResSuccesses,
    kResLastFailure,
    kResLastChange,
    kResGeneration,
    kResPinState,   // "" when not pinned
    kResPinUntil,
    kResPinReason,
    kResPinUid,
    kResPinPid,
    kResFrom,       // "" when nothing changed
    kResTo,
    kResCause,
    kResExtra1,     // acquire: allowed (0/1); reset: removed (0/1)
    kResExtra2,     // acquire: permit
    kResExtra3,     // acquire: retryAfterMs
    kResFieldCount,
};
// The circuit fields come in the hash's own field order (redis_store.cpp
// reads them and HMGET answers alike).
static_assert(kResPinPid - kResState == 10);

} // namespace cbd
