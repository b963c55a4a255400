// The Redis Functions library the Redis backend runs: one function per
// operation, each atomic in Redis (docs/REDIS.md has the key layout). The
// Lua lives in cbd_functions.lua and follows memory_store.cpp rule for
// rule; time comes from Redis's TIME (or, under --test-clock, from the
// daemon), so every host agrees.
//
// Every constant the library needs (limits, state, cause and status names,
// hash field names, policy field names, key name parts, the operations'
// names) is generated from the C++ definitions below and in common/ into
// Lua `local`s (redis_function_constants()) laid before the library's own
// text, so a rename in C++ cannot leave Lua behind; the Lua holds no such
// literal (tests/unit/redis_test.cpp checks).
#pragma once

#include "common/protocol.hpp"

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace cbd {

// The library's operations (FCALL <library>_<name>), and their names.
enum class RedisFunction : std::uint8_t {
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
inline constexpr std::size_t kRedisFunctionCount = 14;
inline constexpr std::array<std::string_view, kRedisFunctionCount> kRedisFunctionNames = {
    "get",   "success", "failure", "transition", "reset", "acquire", "report",
    "force", "unforce", "policy",  "list",       "sweep", "export",  "import"};
// The function that runs several operations in one call (redis_store.cpp
// sends the operations waiting to go as one batch).
inline constexpr std::string_view kRedisBatchName = "batch";
// Every library cbd loads is named so, then a digest of its text.
inline constexpr std::string_view kRedisLibraryPrefix = "cbd_";

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

// The generated Lua constants (`local NAME = value` lines).
const std::string& redis_function_constants();
// The hand-written Lua of the library (cbd_functions.lua).
std::string_view redis_functions_lua();
// The library's name: kRedisLibraryPrefix and a digest of its text.
const std::string& redis_library_name();
// The whole library as FUNCTION LOAD takes it: the `#!lua name=` line, the
// function names' prefix, the constants, then the Lua.
const std::string& redis_library_source();
// What FCALL calls for an operation, and for a batch of them.
std::string redis_function_name(RedisFunction function);
std::string redis_batch_function_name();

// What the send queue allows (redis_store.cpp, docs/REDIS.md "The send
// queue"). In flight: enough to keep Redis busy between round trips (at
// 64 a 16-deep pipelined load lost 44% of its throughput; 2048 gained
// nothing over 512), and little enough that Redis runs them all in a few
// milliseconds (a call costs Redis 10-20 us), far inside any
// --backend-timeout, so a long backlog waits in cbd, where each call keeps
// its own deadline, and never in Redis, where the oldest would time the
// connection out.
// Counted by weight (redis_store.hpp: a list step weighs the keys it may
// examine).
inline constexpr std::size_t kRedisInFlight = 512;
// Most weight in one batch call: what Redis runs without a break (~1 ms).
inline constexpr std::size_t kRedisBatchMax = 128;
// Most calls waiting in cbd (reads at most half): beyond what the
// connections' own bounds let arrive in one --backend-timeout.
inline constexpr std::size_t kRedisQueueCapacity = 65536;

// Functions came with Redis 7.0.
inline constexpr std::string_view kRedisMinimumVersion = "7.0";
// "7.0.15" from INFO server's text ("" when it names none).
std::string redis_version_of(std::string_view info);
bool redis_version_supported(std::string_view version);

// Every function takes this many KEYS (for a batch: this many per call).
inline constexpr std::size_t kRedisKeysPerCall = 6;

// Keys a script is given, in order (KEYS[1..6]), for `key` under `prefix`.
// ARGV: the key, the five policy values (probeLeaseMs 0: no layer of the
// daemon sets it, so the lease is the resolved resetTimeoutMs, as in
// PolicySet), the operation's own, then the most circuits the shared store
// may hold, and last the time in epoch ms ('' = Redis's TIME).
std::array<std::string, kRedisKeysPerCall> redis_function_keys(std::string_view prefix,
                                                               std::string_view key);

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
    NoFunction, // Redis lost the library (FUNCTION FLUSH): load it again and retry once
    TooMany,    // the store's limit (too_many_circuits)
    Outage,     // Redis cannot serve now (loading, busy, read-only replica, ...)
    Data,       // what Redis holds is not usable, or a script refused a value
    Invalid,    // a configure the script refused (invalid_request)
};
RedisErrorKind classify_redis_error(std::string_view reply);
// The part of an error reply worth showing a client: without the tag and
// without Redis's "script: SHA, on @user_script:N." trailer.
std::string redis_error_text(std::string_view reply);

} // namespace cbd
