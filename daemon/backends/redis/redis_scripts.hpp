// The Lua scripts the Redis backend runs, one per operation, each atomic in
// Redis (docs/REDIS.md has the key layout). They follow memory_store.cpp
// rule for rule; time comes from Redis's TIME (or, under --test-clock, from
// the daemon), so every host agrees.
//
// Every constant a script needs (limits, state, cause and status names,
// hash field names, policy field names, key name parts) is generated from
// the C++ definitions below and in common/ into a prelude of Lua `local`s
// (redis_script_constants()), so a rename in C++ cannot leave Lua behind;
// the scripts' own text names them and holds no such literal
// (tests/unit/redis_test.cpp checks).
#pragma once

#include "common/protocol.hpp"

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

// The largest count, time or generation anything reads from Redis or
// writes to it (what a JSON number holds exactly everywhere). A count
// stops there; a generation past it is an error.
inline constexpr std::int64_t kRedisMaxInteger = kMaxSafeInteger;

// Most index keys one script call of `list` or `export` examines: a script
// blocks Redis while it runs, so a page is gathered by several calls, each
// well under a millisecond, with other clients' commands between them.
inline constexpr std::size_t kRedisScanPerCall = 64;
// Most circuits one sweep call settles.
inline constexpr std::size_t kRedisSweepPerCall = 100;
// Most bytes of a bad value quoted back in an error message.
inline constexpr std::size_t kRedisShownValueBytes = 64;

// A circuit hash's fields, in the order scripts read and answer them.
inline constexpr std::size_t kRedisCircuitFieldCount = 11;
inline constexpr std::array<std::string_view, kRedisCircuitFieldCount> kRedisCircuitFields = {
    "state", "fc", "sc", "lft", "lsc", "gen", "ps", "pu", "pr", "puid", "ppid"};

// Key names under the prefix (docs/REDIS.md): per key K, `P c:K` etc.
inline constexpr std::string_view kRedisCircuitPart = "c:";
inline constexpr std::string_view kRedisProbesPart = "probes:";
inline constexpr std::string_view kRedisPolicyPart = "policy:";
// Trip-rule state, only for circuits that need one (docs/REDIS.md): a hash
// (the consecutive run, the backoff's re-open count, a rate window's shape,
// totals and time buckets) and a count window's ring of calls (a string,
// one byte per call).
inline constexpr std::string_view kRedisRulePart = "rule:";
inline constexpr std::string_view kRedisRingPart = "ring:";
inline constexpr std::string_view kRedisGenerationKey = "generation";
inline constexpr std::string_view kRedisPermitCounterKey = "generation:permits";
inline constexpr std::string_view kRedisEventsKey = "events";
inline constexpr std::string_view kRedisIndexKey = "index";
inline constexpr std::string_view kRedisPoliciesKey = "policies";
inline constexpr std::string_view kRedisDeadlinesKey = "deadlines";
// Circuits by state (fields: the state names, and kRedisPinnedCountField).
inline constexpr std::string_view kRedisCountsKey = "counts";
inline constexpr std::string_view kRedisPinnedCountField = "pinned";

// Error replies a script raises on purpose, by their first word.
inline constexpr std::string_view kRedisErrTooMany = "TOO_MANY_CIRCUITS";
// A value in Redis out of range or of the wrong type, a generation past
// kRedisMaxInteger: not an outage (backend_error); the rest of the reply
// says what and where.
inline constexpr std::string_view kRedisErrBackend = "CBD_BACKEND_ERROR";
// A configure whose fields cannot hold together with the daemon's layers
// (invalid_request); the rest of the reply names the field.
inline constexpr std::string_view kRedisErrInvalid = "CBD_INVALID_POLICY";

// A circuit script's first answer field.
inline constexpr std::array<std::string_view, 5> kRedisStatusNames = {"ok", "conflict", "forced",
                                                                      "no_permit", "stale"};
// Markers in the operations' arguments (the callers build them): a flag
// set, a policy field to remove (a report's outcome is its wire name).
inline constexpr std::string_view kRedisArgTrue = "1";
inline constexpr std::string_view kRedisArgRemove = "-";
// The rule hash's fields (kRedisRulePart): the consecutive run, the
// backoff's re-opens in a row, the window's shape (type, size), a count
// window's totals and next ring position; a time window's bucket i is four
// fields, each of these prefixes followed by i.
inline constexpr std::array<std::string_view, 8> kRedisRuleFields = {
    "run", "reopens", "type", "size", "calls", "failures", "slow", "head"};
inline constexpr std::array<std::string_view, 4> kRedisBucketFieldPrefixes = {"bi", "bc", "bf",
                                                                              "bs"};
// The first element of each message on the events channel.
inline constexpr std::string_view kRedisEventTransition = "transition";
inline constexpr std::string_view kRedisEventReset = "reset";
// A probe permits set outlives its last lease by this much, then expires
// on its own (nothing else cleans up a circuit nobody touches again).
inline constexpr std::int64_t kRedisProbesGraceMs = 60'000;
// A paged script's first answer field: the range is done, or call again.
inline constexpr std::string_view kRedisPageEnd = "end";
inline constexpr std::string_view kRedisPageMore = "more";

// The generated Lua constants (`local NAME = value` lines), the same for
// every script.
const std::string& redis_script_constants();
// The shared, hand-written part of every script (after the constants).
std::string_view redis_script_prelude();
// A script's own part.
std::string_view redis_script_body(RedisScript script);
// The full Lua source of a script: constants, prelude, body. Loaded with
// SCRIPT LOAD on every new connection; its SHA-1 comes back from Redis.
const std::string& redis_script_source(RedisScript script);

// Keys a script is given, in order (KEYS[1..6]), for `key` under `prefix`.
// ARGV: the key, the five policy values (probeLeaseMs 0: no layer of the
// daemon sets it, so the lease is the resolved resetTimeoutMs, as in
// PolicySet), the operation's own, then the most circuits the shared store
// may hold, and last the time in epoch ms ('' = Redis's TIME).
std::array<std::string, 6> redis_script_keys(std::string_view prefix, std::string_view key);

// What every circuit script returns (an array), by index.
enum RedisResultField : std::size_t {
    kResStatus, // one of kRedisStatusNames
    kResState,
    kResFailures,
    kResSuccesses,
    kResLastFailure,
    kResLastChange,
    kResGeneration,
    kResPinState, // "" when not pinned
    kResPinUntil,
    kResPinReason,
    kResPinUid,
    kResPinPid,
    kResFrom, // "" when nothing changed
    kResTo,
    kResCause,
    kResAllowed,      // acquire: 1 when the call may go ahead
    kResPermit,       // acquire: a half-open probe's permit, "" otherwise
    kResRetryAfterMs, // acquire, when denied
    kResWouldDeny,    // acquire: 1 when observe mode allowed what enforce would deny
    kResWindow,       // 1 when the policy uses the rate rule (then the three below)
    kResWindowCalls,
    kResWindowFailures,
    kResWindowSlow,
    kResFieldCount,
};
// The circuit fields come in the hash's own field order (redis_store.cpp
// reads them and HMGET answers alike).
static_assert(kResPinPid - kResState + 1 == kRedisCircuitFieldCount);

// How the Redis backend treats an error reply.
enum class RedisErrorKind : std::uint8_t {
    NoScript, // the script cache lost the script: load it again and retry once
    TooMany,  // the store's limit (too_many_circuits)
    Outage,   // Redis cannot serve now (loading, busy, read-only replica, ...)
    Data,     // what Redis holds is not usable, or a script refused a value
    Invalid,  // a configure the script refused (invalid_request)
};
RedisErrorKind classify_redis_error(std::string_view reply);
// The part of an error reply worth showing a client: without the tag and
// without Redis's "script: SHA, on @user_script:N." trailer.
std::string redis_error_text(std::string_view reply);

} // namespace cbd
