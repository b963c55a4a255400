// Breaker policies: the fields that decide when a circuit opens (its trip
// rule and, for the `rate` rule, its window), how long it stays open, how it
// recovers, and whether it is enforced at all. Defaults are the reference
// gateway's. A PolicyPatch is a partial policy (a layer: config-file
// defaults, a prefix rule, a key override); layers are applied in order.
//
// Every field is held as an integer, so patches, layers and the Redis
// scripts treat all of them alike; the fields whose wire values are names
// (tripRule, windowType, mode) hold the name's index in their spec's list.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "common/protocol.hpp"

#include <nlohmann/json_fwd.hpp>

namespace cbd {

enum class PolicyField : std::uint8_t {
    FailureThreshold,
    ResetTimeoutMs,
    HalfOpenMax,
    SuccessThreshold,
    ProbeLeaseMs,
    TripRule,
    WindowType,
    WindowSize,
    MinimumCalls,
    FailureRateThreshold,
    SlowCallDurationMs,
    SlowCallRateThreshold,
    ResetTimeoutMaxMs,
    Mode,
};
inline constexpr std::size_t kPolicyFieldCount = 14;

// Largest accepted value of a plain integer field (about 285 years in ms):
// keeps every time computation far from overflow.
inline constexpr std::int64_t kMaxPolicyValue = kMaxSafeInteger;

// The rate rule's window is bounded so that what one circuit holds is
// bounded: a count window keeps one byte per call (at most 10,000), a time
// window kTimeWindowBuckets buckets over at most an hour.
inline constexpr std::int64_t kMaxCountWindow = 10'000;
inline constexpr std::int64_t kMaxTimeWindowMs = 3'600'000;
inline constexpr std::int64_t kTimeWindowBuckets = 10;
// A time bucket's counts stop here: ten of them times 100 stay exact in a
// Lua number (the Redis scripts count alike), and an hour at a billion
// calls a second does not reach it.
inline constexpr std::int64_t kMaxWindowBucketCount = 1'000'000'000'000;
// Re-opens in a row the backoff counts (62 doublings pass any open time).
inline constexpr std::int64_t kMaxReopens = 62;

enum class TripRule : std::uint8_t { Count, Consecutive, Rate };
enum class WindowType : std::uint8_t { Count, Time };
enum class BreakerMode : std::uint8_t { Enforce, Observe, Disabled };

inline constexpr std::array<std::string_view, 3> kTripRuleNames = {"count", "consecutive", "rate"};
inline constexpr std::array<std::string_view, 2> kWindowTypeNames = {"count", "time"};
inline constexpr std::array<std::string_view, 3> kModeNames = {"enforce", "observe", "disabled"};

// One field: its wire name, its range, its built-in default, and for a
// field of names the names (its values are their indices).
struct PolicyFieldSpec {
    std::string_view name;
    std::int64_t min;
    std::int64_t max;
    std::int64_t fallback;                   // the built-in default
    std::span<const std::string_view> names; // empty: an integer field
};

inline constexpr std::array<PolicyFieldSpec, kPolicyFieldCount> kPolicyFieldSpecs = {{
    {"failureThreshold", 1, kMaxPolicyValue, 5, {}},
    {"resetTimeoutMs", 1, kMaxPolicyValue, 30'000, {}},
    {"halfOpenMax", 1, kMaxPolicyValue, 1, {}},
    {"successThreshold", 1, kMaxPolicyValue, 1, {}},
    {"probeLeaseMs", 1, kMaxPolicyValue, 30'000, {}}, // unless set: resetTimeoutMs
    {"tripRule", 0, 2, 0, kTripRuleNames},
    {"windowType", 0, 1, 0, kWindowTypeNames},
    {"windowSize", 1, kMaxTimeWindowMs, 100, {}}, // a count window: at most kMaxCountWindow
    {"minimumCalls", 1, kMaxPolicyValue, 100, {}},
    {"failureRateThreshold", 1, 100, 50, {}},
    {"slowCallDurationMs", 0, kMaxPolicyValue, 0, {}},
    {"slowCallRateThreshold", 1, 100, 100, {}},
    {"resetTimeoutMaxMs", 1, kMaxPolicyValue, 30'000, {}}, // unless set: resetTimeoutMs
    {"mode", 0, 2, 0, kModeNames},
}};

// The wire names, indexed by PolicyField.
inline constexpr std::array<std::string_view, kPolicyFieldCount> kPolicyFieldNames = [] {
    std::array<std::string_view, kPolicyFieldCount> names{};
    for (std::size_t i = 0; i < kPolicyFieldCount; ++i)
        names[i] = kPolicyFieldSpecs[i].name;
    return names;
}();

inline const PolicyFieldSpec& policy_field_spec(PolicyField f) {
    return kPolicyFieldSpecs[static_cast<std::size_t>(f)];
}

struct Policy {
    std::array<std::int64_t, kPolicyFieldCount> values = [] {
        std::array<std::int64_t, kPolicyFieldCount> v{};
        for (std::size_t i = 0; i < kPolicyFieldCount; ++i)
            v[i] = kPolicyFieldSpecs[i].fallback;
        return v;
    }();

    std::int64_t get(PolicyField f) const { return values[static_cast<std::size_t>(f)]; }
    void set(PolicyField f, std::int64_t v) { values[static_cast<std::size_t>(f)] = v; }

    std::int64_t failure_threshold() const { return get(PolicyField::FailureThreshold); }
    std::int64_t reset_timeout_ms() const { return get(PolicyField::ResetTimeoutMs); }
    std::int64_t half_open_max() const { return get(PolicyField::HalfOpenMax); }
    std::int64_t success_threshold() const { return get(PolicyField::SuccessThreshold); }
    std::int64_t probe_lease_ms() const { return get(PolicyField::ProbeLeaseMs); }
    TripRule trip_rule() const { return static_cast<TripRule>(get(PolicyField::TripRule)); }
    WindowType window_type() const { return static_cast<WindowType>(get(PolicyField::WindowType)); }
    // A count window holds at most kMaxCountWindow calls, whatever layers
    // made of it: each layer is checked, but a reload of the defaults can
    // still turn a key's 20000 ms time window into a count window of 20000.
    std::int64_t window_size() const {
        const std::int64_t size = get(PolicyField::WindowSize);
        return window_type() == WindowType::Count ? std::min(size, kMaxCountWindow) : size;
    }
    std::int64_t minimum_calls() const { return get(PolicyField::MinimumCalls); }
    std::int64_t failure_rate_threshold() const { return get(PolicyField::FailureRateThreshold); }
    std::int64_t slow_call_duration_ms() const { return get(PolicyField::SlowCallDurationMs); }
    std::int64_t slow_call_rate_threshold() const {
        return get(PolicyField::SlowCallRateThreshold);
    }
    std::int64_t reset_timeout_max_ms() const { return get(PolicyField::ResetTimeoutMaxMs); }
    BreakerMode mode() const { return static_cast<BreakerMode>(get(PolicyField::Mode)); }

    // How long the circuit stays open after `reopens` re-opens from
    // half-open in a row: resetTimeoutMs doubled that many times, at most
    // resetTimeoutMaxMs (and never less than resetTimeoutMs).
    std::int64_t open_time_ms(std::int64_t reopens) const;
};

// What each field means, one line, for --help of cbd's and cbctl's flags.
inline constexpr std::array<std::string_view, kPolicyFieldCount> kPolicyFieldHelp = {
    "count rule: failures (since the circuit closed) that open it; consecutive rule: "
    "failures in a row (default 5)",
    "How long an open circuit stays open before a probe (default 30000)",
    "Probes allowed at once in half-open, across all clients (default 1)",
    "Successful probes needed to close (default 1)",
    "How long a probe permit lives unreported (default: the reset timeout)",
    "When a closed circuit opens: count, consecutive or rate (default count)",
    "rate rule: the last windowSize calls (count) or ms (time) (default count)",
    "rate rule: calls (at most 10000) or ms (at most 3600000) (default 100)",
    "rate rule: calls the window must hold before a rate is judged (default 100)",
    "rate rule: failure percent (1-100) that opens (default 50)",
    "A call reported at least this long is slow; 0 = off (default 0)",
    "rate rule: slow-call percent (1-100) that opens (default 100)",
    "Each failed probe in a row doubles the open time, up to this (default: the reset "
    "timeout, no backoff)",
    "enforce, observe (decide, never deny) or disabled (default enforce)",
};

// The name of each field's value in --help (cbd's flags, cbctl configure)
// and the man pages: what is typed there.
inline constexpr std::array<std::string_view, kPolicyFieldCount> kPolicyFieldValueNames = {
    "N", "MS", "N", "N", "MS", "RULE", "TYPE", "N", "N", "PERCENT", "MS", "PERCENT", "MS", "MODE",
};

struct PolicyPatch;

// A field's command-line flag: its wire name in kebab case
// (failureThreshold -> --failure-threshold).
std::string policy_flag_name(PolicyField f);
// A field's value as written on a command line (a number, or a name), or
// nullopt with `error` set naming the field.
std::optional<std::int64_t> parse_policy_text(PolicyField f, std::string_view text,
                                              std::string& error);
// The combination checks of parse_policy_patch() on a patch built another
// way (command-line flags).
std::optional<std::string> patch_combination_problem(const PolicyPatch& patch);

// Checks that hold between the fields of a resolved policy; the message
// names the field. nullopt when the policy is usable.
std::optional<std::string> policy_combination_problem(const Policy& p);

struct PolicyPatch {
    std::array<std::optional<std::int64_t>, kPolicyFieldCount> values;

    bool empty() const;
    const std::optional<std::int64_t>& operator[](PolicyField f) const {
        return values[static_cast<std::size_t>(f)];
    }
    std::optional<std::int64_t>& operator[](PolicyField f) {
        return values[static_cast<std::size_t>(f)];
    }
    // Fields set in `over` replace ours.
    void merge(const PolicyPatch& over);

    bool operator==(const PolicyPatch&) const = default;
};

// Reads a patch from a JSON object of policy fields. Every value must be in
// its field's range (a name from its list, for a field of names); when
// `allow_null` a null removes the field (recorded in `removed`). Unknown
// fields are refused so that a misspelt field is not silently ignored. The
// fields the patch sets together are checked as a combination too
// (resetTimeoutMaxMs not below resetTimeoutMs, a count window of at most
// kMaxCountWindow calls). On error returns a message naming the field.
std::optional<std::string> parse_policy_patch(const nlohmann::json& obj, PolicyPatch& out,
                                              bool allow_null = false,
                                              PolicyPatch* removed = nullptr,
                                              std::string_view skip_field = {});

// One field's value as JSON: a number, or the quoted name.
std::string policy_value_json(PolicyField f, std::int64_t value);
// The policy as a JSON object text, fields in kPolicyFieldNames order.
std::string policy_json(const Policy& p);
// Only the fields the patch sets, in kPolicyFieldNames order.
std::string policy_patch_json(const PolicyPatch& patch);

} // namespace cbd
