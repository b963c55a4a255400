// The Redis backend's Functions library (see redis_functions.hpp and
// docs/REDIS.md): the generated constants and the library's name, laid
// before the Lua of cbd_functions.lua (embedded at build time).
#include "daemon/backends/redis/redis_functions.hpp"

#include "common/policy.hpp"
#include "common/protocol.hpp"
#include "daemon/breaker/circuit_store.hpp"
#include "daemon/core/fnv1a.hpp"
#include "daemon/dispatch/stats.hpp"

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <utility>

namespace cbd {

// cbd_functions.lua, embedded at build time (cbd_functions_lua.cpp.in).
extern const std::string_view kRedisFunctionsLua;

namespace {

// The Lua names of the policy fields (indices into a policy array), and of
// the circuit hash's fields (F_: the field's name, I_: its index), in the
// C++ order.
constexpr std::array<std::string_view, kPolicyFieldCount> kPolicyLuaNames = {
    "PF_FAILURE_THRESHOLD", "PF_RESET_TIMEOUT", "PF_HALF_OPEN_MAX", "PF_SUCCESS_THRESHOLD",
    "PF_PROBE_LEASE",       "PF_TRIP_RULE",     "PF_WINDOW_TYPE",   "PF_WINDOW_SIZE",
    "PF_MINIMUM_CALLS",     "PF_FAILURE_RATE",  "PF_SLOW_DURATION", "PF_SLOW_RATE",
    "PF_RESET_TIMEOUT_MAX", "PF_MODE"};
constexpr std::array<std::string_view, kRedisRuleFields.size()> kRuleLuaNames = {
    "RF_RUN", "RF_REOPENS", "RF_TYPE", "RF_SIZE", "RF_CALLS", "RF_FAILURES", "RF_SLOW", "RF_HEAD"};
constexpr std::array<std::string_view, kRedisBucketFieldPrefixes.size()> kBucketLuaNames = {
    "BF_INDEX", "BF_CALLS", "BF_FAILURES", "BF_SLOW"};
constexpr std::array<std::string_view, kRedisCircuitFieldCount> kCircuitLuaNames = {
    "STATE", "FC", "SC", "LFT", "LSC", "GEN", "PS", "PU", "PR", "PUID", "PPID"};
constexpr std::array<std::pair<TransitionCause, std::string_view>, kTransitionCauseCount>
    kCauseLuaNames = {{{TransitionCause::Manual, "CAUSE_MANUAL"},
                       {TransitionCause::Threshold, "CAUSE_THRESHOLD"},
                       {TransitionCause::Timeout, "CAUSE_TIMEOUT"},
                       {TransitionCause::ProbeSuccess, "CAUSE_PROBE_SUCCESS"},
                       {TransitionCause::ProbeFailure, "CAUSE_PROBE_FAILURE"},
                       {TransitionCause::LeaseExpired, "CAUSE_LEASE_EXPIRED"},
                       {TransitionCause::Force, "CAUSE_FORCE"},
                       {TransitionCause::Unforce, "CAUSE_UNFORCE"},
                       {TransitionCause::ForceExpired, "CAUSE_FORCE_EXPIRED"},
                       {TransitionCause::FailureRate, "CAUSE_FAILURE_RATE"},
                       {TransitionCause::SlowCallRate, "CAUSE_SLOW_CALL_RATE"},
                       {TransitionCause::Consecutive, "CAUSE_CONSECUTIVE"}}};
constexpr std::array<std::string_view, kRedisStatusNames.size()> kStatusLuaNames = {
    "ST_OK", "ST_CONFLICT", "ST_FORCED", "ST_NO_PERMIT", "ST_STALE"};

// ARGV: 1 the key, then the policy numbers, then the operation's own
// (`op` in Lua), then the trailing ones (max circuits, time).
constexpr std::size_t kFirstPolicyArg = 2;
constexpr std::size_t kFirstOpArg = kFirstPolicyArg + kPolicyFieldCount;
constexpr std::size_t kTrailingArgs = 2;

// A Lua string literal of a name (names hold no quote or backslash).
std::string quoted(std::string_view s) {
    std::string out = "'";
    for (char ch : s)
        if (ch == '\'' || ch == '\\' || static_cast<unsigned char>(ch) < 0x20)
            throw std::logic_error("a Lua constant holds a character it cannot");
        else
            out += ch;
    return out + "'";
}

std::string build_constants() {
    std::string out = "-- generated from the C++ definitions (redis_functions.cpp)\n";
    auto def = [&out](std::string_view name, const std::string& value) {
        out += "local ";
        out += name;
        out += " = ";
        out += value;
        out += '\n';
    };
    auto num = [](auto v) { return std::to_string(v); };
    auto table = [](const auto& names) {
        std::string t = "{";
        for (std::size_t i = 0; i < names.size(); ++i)
            t += (i ? ", " : "") + quoted(names[i]);
        return t + "}";
    };

    def("MAX_INT", num(kRedisMaxInteger));
    // Decimal digits any number of which a Lua number (a double) holds exactly.
    def("EXACT_DIGITS", num(std::numeric_limits<double>::digits10));
    def("MAX_POLICY", num(kMaxPolicyValue));
    def("MAX_REASON_BYTES", num(kMaxReasonBytes));
    def("MAX_UID", num(std::numeric_limits<std::uint32_t>::max()));
    def("MAX_PID", num(std::numeric_limits<std::int32_t>::max()));
    def("SCAN_PER_CALL", num(kRedisScanPerCall));
    def("SWEEP_PER_CALL", num(kRedisSweepPerCall));
    def("SHOWN_BYTES", num(kRedisShownValueBytes));
    def("PERMIT_MODULUS", num(std::uint64_t{1} << 32)); // a permit's counter part is 8 hex digits
    def("PROBES_GRACE_MS", num(kRedisProbesGraceMs));
    def("A_POLICY", num(kFirstPolicyArg));
    def("A_OP", num(kFirstOpArg));
    def("TRAILING_ARGS", num(kTrailingArgs));

    def("POLICY_FIELD_COUNT", num(kPolicyFieldCount));
    def("POLICY_FIELDS", table(kPolicyFieldNames));
    std::string mins = "{", maxes = "{";
    for (std::size_t i = 0; i < kPolicyFieldCount; ++i) {
        def(kPolicyLuaNames[i], num(i + 1));
        mins += (i ? ", " : "") + num(kPolicyFieldSpecs[i].min);
        maxes += (i ? ", " : "") + num(kPolicyFieldSpecs[i].max);
    }
    def("POLICY_MIN", mins + "}");
    def("POLICY_MAX", maxes + "}");
    def("RULE_COUNT", num(static_cast<int>(TripRule::Count)));
    def("RULE_CONSECUTIVE", num(static_cast<int>(TripRule::Consecutive)));
    def("RULE_RATE", num(static_cast<int>(TripRule::Rate)));
    def("WINDOW_COUNT", num(static_cast<int>(WindowType::Count)));
    def("WINDOW_TIME", num(static_cast<int>(WindowType::Time)));
    def("MODE_OBSERVE", num(static_cast<int>(BreakerMode::Observe)));
    def("MODE_DISABLED", num(static_cast<int>(BreakerMode::Disabled)));
    def("MAX_COUNT_WINDOW", num(kMaxCountWindow));
    def("MAX_TIME_WINDOW", num(kMaxTimeWindowMs));
    def("WINDOW_BUCKETS", num(kTimeWindowBuckets));
    def("MAX_BUCKET_COUNT", num(kMaxWindowBucketCount));
    def("MAX_REOPENS", num(kMaxReopens));
    def("PERCENT", num(100));
    def("FAILED_BIT", num(1));
    def("SLOW_BIT", num(2));
    for (std::size_t i = 0; i < kRedisRuleFields.size(); ++i)
        def(kRuleLuaNames[i], quoted(kRedisRuleFields[i]));
    for (std::size_t i = 0; i < kRedisBucketFieldPrefixes.size(); ++i)
        def(kBucketLuaNames[i], quoted(kRedisBucketFieldPrefixes[i]));

    def("CIRCUIT_FIELD_COUNT", num(kRedisCircuitFieldCount));
    def("CIRCUIT_FIELDS", table(kRedisCircuitFields));
    for (std::size_t i = 0; i < kRedisCircuitFieldCount; ++i) {
        def("F_" + std::string(kCircuitLuaNames[i]), quoted(kRedisCircuitFields[i]));
        def("I_" + std::string(kCircuitLuaNames[i]), num(i + 1));
    }

    def("CLOSED", quoted(state_name(State::Closed)));
    def("OPEN", quoted(state_name(State::Open)));
    def("HALF_OPEN", quoted(state_name(State::HalfOpen)));
    for (const auto& [cause, name] : kCauseLuaNames)
        def(name, quoted(transition_cause_name(cause)));
    for (std::size_t i = 0; i < kRedisStatusNames.size(); ++i)
        def(kStatusLuaNames[i], quoted(kRedisStatusNames[i]));
    def("PAGE_END", quoted(kRedisPageEnd));
    def("PAGE_MORE", quoted(kRedisPageMore));
    def("ERR_TOO_MANY", quoted(kRedisErrTooMany));
    def("ERR_BACKEND", quoted(kRedisErrBackend));
    def("ERR_INVALID", quoted(kRedisErrInvalid));
    def("ARG_TRUE", quoted(kRedisArgTrue));
    def("ARG_REMOVE", quoted(kRedisArgRemove));
    def("OUTCOME_FAILURE", quoted(outcome_name(Outcome::Failure)));
    def("OUTCOME_IGNORED", quoted(outcome_name(Outcome::Ignored)));
    def("EV_TRANSITION", quoted(kRedisEventTransition));
    def("EV_RESET", quoted(kRedisEventReset));

    def("K_CIRCUIT", quoted(kRedisCircuitPart));
    def("K_PROBES", quoted(kRedisProbesPart));
    def("K_POLICY", quoted(kRedisPolicyPart));
    def("K_RULE", quoted(kRedisRulePart));
    def("K_RING", quoted(kRedisRingPart));
    def("K_GENERATION", quoted(kRedisGenerationKey));
    def("K_PERMITS", quoted(kRedisPermitCounterKey));
    def("K_EVENTS", quoted(kRedisEventsKey));
    def("K_INDEX", quoted(kRedisIndexKey));
    def("K_POLICIES", quoted(kRedisPoliciesKey));
    def("K_DEADLINES", quoted(kRedisDeadlinesKey));
    def("K_COUNTS", quoted(kRedisCountsKey));
    def("COUNT_PINNED", quoted(kRedisPinnedCountField));
    def("OP_NAMES", table(kRedisFunctionNames));
    def("KEYS_PER_CALL", num(kRedisKeysPerCall));
    def("BATCH_NAME", quoted(kRedisBatchName));
    return out;
}

struct Library {
    std::string name;
    std::string source;
};

Library build_library() {
    // The library's name carries its text's digest, so any change to the
    // text gives it a new name (a rolling upgrade runs both).
    const std::string body = redis_function_constants() + std::string(kRedisFunctionsLua);
    char digest[17];
    std::snprintf(digest, sizeof digest, "%016llx", static_cast<unsigned long long>(fnv1a(body)));
    Library lib;
    lib.name = std::string(kRedisLibraryPrefix) + digest;
    lib.source = "#!lua name=" + lib.name + "\nlocal FUNCTION_PREFIX = " + quoted(lib.name + "_") +
                 "\n" + body;
    return lib;
}

const Library& library() {
    static const Library lib = build_library();
    return lib;
}

} // namespace

const std::string& redis_function_constants() {
    static const std::string constants = build_constants();
    return constants;
}

std::string_view redis_functions_lua() {
    return kRedisFunctionsLua;
}

const std::string& redis_library_name() {
    return library().name;
}

const std::string& redis_library_source() {
    return library().source;
}

std::string redis_function_name(RedisFunction function) {
    return redis_library_name() + "_" +
           std::string(kRedisFunctionNames[static_cast<std::size_t>(function)]);
}

std::string redis_batch_function_name() {
    return redis_library_name() + "_" + std::string(kRedisBatchName);
}

std::array<std::string, kRedisKeysPerCall> redis_function_keys(std::string_view prefix,
                                                               std::string_view key) {
    const std::string p(prefix);
    const std::string k(key);
    return {p + std::string(kRedisCircuitPart) + k, p + std::string(kRedisProbesPart) + k,
            p + std::string(kRedisGenerationKey),   p + std::string(kRedisPolicyPart) + k,
            p + std::string(kRedisEventsKey),       p + std::string(kRedisIndexKey)};
}

std::string redis_version_of(std::string_view info) {
    constexpr std::string_view field = "redis_version:";
    const auto at = info.find(field);
    if (at == std::string_view::npos)
        return {};
    auto rest = info.substr(at + field.size());
    return std::string(rest.substr(0, rest.find_first_of("\r\n")));
}

bool redis_version_supported(std::string_view version) {
    unsigned major = 0;
    const auto [end, ec] = std::from_chars(version.data(), version.data() + version.size(), major);
    return ec == std::errc() && major >= 7;
}

RedisErrorKind classify_redis_error(std::string_view reply) {
    const auto word = reply.substr(0, reply.find(' '));
    // FUNCTION FLUSH, or a Redis that lost its functions: load and retry.
    if (reply.starts_with("ERR Function not found") || word == "NOSCRIPT")
        return RedisErrorKind::NoFunction;
    if (word == kRedisErrTooMany)
        return RedisErrorKind::TooMany;
    if (word == kRedisErrInvalid)
        return RedisErrorKind::Invalid;
    if (word == kRedisErrBackend || word == "WRONGTYPE" || word == "ERR")
        return RedisErrorKind::Data;
    // Redis's states that pass: loading a dataset, a busy script, a replica
    // that is read-only or lost its master, memory or disk trouble, ACL or
    // password changes. Anything unknown is treated the same: a failure of
    // the service, not of one key's data.
    return RedisErrorKind::Outage;
}

std::string redis_error_text(std::string_view reply) {
    if (reply.starts_with(kRedisErrBackend) || reply.starts_with(kRedisErrTooMany) ||
        reply.starts_with(kRedisErrInvalid))
        reply.remove_prefix(reply.find(' ') == std::string_view::npos ? reply.size()
                                                                      : reply.find(' ') + 1);
    // Redis 7 appends where in the script the error was raised.
    if (const auto at = reply.rfind(" script: "); at != std::string_view::npos)
        reply = reply.substr(0, at);
    while (!reply.empty() && (reply.back() == ' ' || reply.back() == '.'))
        reply.remove_suffix(1);
    return std::string(reply);
}

} // namespace cbd
