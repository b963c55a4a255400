// Policies (see policy.hpp).
#include "common/policy.hpp"

#include <nlohmann/json.hpp>

namespace cbd {

std::int64_t Policy::get(PolicyField f) const {
    switch (f) {
    case PolicyField::FailureThreshold:
        return failure_threshold;
    case PolicyField::ResetTimeoutMs:
        return reset_timeout_ms;
    case PolicyField::HalfOpenMax:
        return half_open_max;
    case PolicyField::SuccessThreshold:
        return success_threshold;
    case PolicyField::ProbeLeaseMs:
        return probe_lease_ms;
    }
    return 0;
}

void Policy::set(PolicyField f, std::int64_t v) {
    switch (f) {
    case PolicyField::FailureThreshold:
        failure_threshold = v;
        break;
    case PolicyField::ResetTimeoutMs:
        reset_timeout_ms = v;
        break;
    case PolicyField::HalfOpenMax:
        half_open_max = v;
        break;
    case PolicyField::SuccessThreshold:
        success_threshold = v;
        break;
    case PolicyField::ProbeLeaseMs:
        probe_lease_ms = v;
        break;
    }
}

bool PolicyPatch::empty() const {
    for (const auto& v : values)
        if (v)
            return false;
    return true;
}

void PolicyPatch::merge(const PolicyPatch& over) {
    for (std::size_t i = 0; i < kPolicyFieldCount; ++i)
        if (over.values[i])
            values[i] = over.values[i];
}

std::optional<std::string> parse_policy_patch(const nlohmann::json& obj, PolicyPatch& out,
                                              bool allow_null, PolicyPatch* removed,
                                              std::string_view skip_field) {
    if (!obj.is_object())
        return std::string("policy must be a JSON object");
    for (auto it = obj.begin(); it != obj.end(); ++it) {
        const std::string& name = it.key();
        if (!skip_field.empty() && name == skip_field)
            continue;
        std::size_t index = kPolicyFieldCount;
        for (std::size_t i = 0; i < kPolicyFieldCount; ++i)
            if (kPolicyFieldNames[i] == name)
                index = i;
        if (index == kPolicyFieldCount) {
            std::string shown = name.size() > 64 ? name.substr(0, 64) + "..." : name;
            return "unknown policy field '" + shown + "'";
        }
        const auto& value = it.value();
        if (allow_null && value.is_null()) {
            out.values[index].reset();
            if (removed)
                removed->values[index] = 1;
            continue;
        }
        std::int64_t v = 0;
        if (value.is_number_unsigned()) {
            auto u = value.get<std::uint64_t>();
            v = u > static_cast<std::uint64_t>(kMaxPolicyValue) ? kMaxPolicyValue + 1
                                                                 : static_cast<std::int64_t>(u);
        } else if (value.is_number_integer()) {
            v = value.get<std::int64_t>();
        } else {
            return "policy field '" + name + "' must be a positive integer";
        }
        if (v < 1 || v > kMaxPolicyValue)
            return "policy field '" + name + "' must be a positive integer (1.." +
                   std::to_string(kMaxPolicyValue) + ")";
        out.values[index] = v;
    }
    return std::nullopt;
}

std::string policy_json(const Policy& p) {
    std::string out = "{";
    for (std::size_t i = 0; i < kPolicyFieldCount; ++i) {
        if (i)
            out += ',';
        out += '"';
        out += kPolicyFieldNames[i];
        out += "\":";
        out += std::to_string(p.get(static_cast<PolicyField>(i)));
    }
    out += '}';
    return out;
}

std::string policy_patch_json(const PolicyPatch& patch) {
    std::string out = "{";
    for (std::size_t i = 0; i < kPolicyFieldCount; ++i) {
        if (!patch.values[i])
            continue;
        if (out.size() > 1)
            out += ',';
        out += '"';
        out += kPolicyFieldNames[i];
        out += "\":";
        out += std::to_string(*patch.values[i]);
    }
    out += '}';
    return out;
}

} // namespace cbd
