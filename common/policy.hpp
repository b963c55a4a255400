// Breaker policies: the five numbers that decide when a circuit opens, how
// long it stays open, and how it recovers. Defaults are the reference
// gateway's. A PolicyPatch is a partial policy (a layer: config-file
// defaults, a prefix rule, a key override); layers are applied in order.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
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
};
inline constexpr std::size_t kPolicyFieldCount = 5;

// The wire names, indexed by PolicyField.
inline constexpr std::array<std::string_view, kPolicyFieldCount> kPolicyFieldNames = {
    "failureThreshold", "resetTimeoutMs", "halfOpenMax", "successThreshold", "probeLeaseMs"};

// Largest accepted value of any field (about 285 years in ms): keeps every
// time computation far from overflow.
inline constexpr std::int64_t kMaxPolicyValue = kMaxSafeInteger;

struct Policy {
    std::int64_t failure_threshold = 5;
    std::int64_t reset_timeout_ms = 30'000;
    std::int64_t half_open_max = 1;
    std::int64_t success_threshold = 1;
    std::int64_t probe_lease_ms = 30'000;

    std::int64_t get(PolicyField f) const;
    void set(PolicyField f, std::int64_t v);
};

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

// Reads a patch from a JSON object of policy fields. Every value must be an
// integer in 1..kMaxPolicyValue; when `allow_null` a null removes the field
// (recorded in `removed`). Unknown fields are refused so that a misspelt
// field is not silently ignored. On error returns a message naming the field.
std::optional<std::string> parse_policy_patch(const nlohmann::json& obj, PolicyPatch& out,
                                              bool allow_null = false,
                                              PolicyPatch* removed = nullptr,
                                              std::string_view skip_field = {});

// The policy as a JSON object text, fields in kPolicyFieldNames order.
std::string policy_json(const Policy& p);
// Only the fields the patch sets, in kPolicyFieldNames order.
std::string policy_patch_json(const PolicyPatch& patch);

} // namespace cbd
