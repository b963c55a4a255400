// Policies (see policy.hpp).
#include "common/policy.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

namespace cbd {

std::int64_t Policy::open_time_ms(std::int64_t reopens) const {
    const std::int64_t base = reset_timeout_ms();
    const std::int64_t cap = std::max(base, reset_timeout_max_ms());
    std::int64_t t = base;
    // Doubling stops at the cap, so this runs at most 53 times.
    for (std::int64_t i = 0; i < reopens && t < cap; ++i)
        t = t > cap / 2 ? cap : t * 2;
    return std::min(t, cap);
}

namespace {

std::optional<std::string> combination_problem(const std::optional<std::int64_t>& timeout,
                                               const std::optional<std::int64_t>& timeout_max,
                                               const std::optional<std::int64_t>& window_type,
                                               const std::optional<std::int64_t>& window_size) {
    if (timeout && timeout_max && *timeout_max < *timeout)
        return "policy field 'resetTimeoutMaxMs' (" + std::to_string(*timeout_max) +
               ") must not be below resetTimeoutMs (" + std::to_string(*timeout) + ")";
    if (window_type && window_size &&
        *window_type == static_cast<std::int64_t>(WindowType::Count) &&
        *window_size > kMaxCountWindow)
        return "policy field 'windowSize' must be at most " + std::to_string(kMaxCountWindow) +
               " calls for a count window (a time window: at most " +
               std::to_string(kMaxTimeWindowMs) + " ms)";
    return std::nullopt;
}

} // namespace

std::optional<std::string> policy_combination_problem(const Policy& p) {
    return combination_problem(p.reset_timeout_ms(), p.reset_timeout_max_ms(),
                               p.get(PolicyField::WindowType), p.get(PolicyField::WindowSize));
}

std::optional<std::string> patch_combination_problem(const PolicyPatch& patch) {
    return combination_problem(patch[PolicyField::ResetTimeoutMs],
                               patch[PolicyField::ResetTimeoutMaxMs],
                               patch[PolicyField::WindowType], patch[PolicyField::WindowSize]);
}

std::string policy_flag_name(PolicyField f) {
    std::string out = "--";
    for (char ch : policy_field_spec(f).name) {
        if (ch >= 'A' && ch <= 'Z') {
            out += '-';
            out += static_cast<char>(ch - 'A' + 'a');
        } else {
            out += ch;
        }
    }
    return out;
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

namespace {

std::string range_text(const PolicyFieldSpec& spec) {
    if (!spec.names.empty()) {
        std::string out = "one of ";
        for (std::size_t i = 0; i < spec.names.size(); ++i)
            out += (i ? ", \"" : "\"") + std::string(spec.names[i]) + "\"";
        return out;
    }
    return "an integer from " + std::to_string(spec.min) + " to " + std::to_string(spec.max);
}

// One value of `spec`'s field, or the error naming it.
std::optional<std::string> read_value(const PolicyFieldSpec& spec, const nlohmann::json& value,
                                      std::int64_t& out) {
    const std::string problem =
        "policy field '" + std::string(spec.name) + "' must be " + range_text(spec);
    if (!spec.names.empty()) {
        if (!value.is_string())
            return problem;
        const auto& text = value.get_ref<const std::string&>();
        for (std::size_t i = 0; i < spec.names.size(); ++i)
            if (spec.names[i] == text) {
                out = static_cast<std::int64_t>(i);
                return std::nullopt;
            }
        return problem;
    }
    std::int64_t v = 0;
    if (value.is_number_unsigned()) {
        auto u = value.get<std::uint64_t>();
        v = u > static_cast<std::uint64_t>(spec.max) ? spec.max + 1 : static_cast<std::int64_t>(u);
    } else if (value.is_number_integer()) {
        v = value.get<std::int64_t>();
    } else {
        return problem;
    }
    if (v < spec.min || v > spec.max)
        return problem;
    out = v;
    return std::nullopt;
}

} // namespace

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
        if (auto err = read_value(kPolicyFieldSpecs[index], value, v))
            return err;
        out.values[index] = v;
    }
    return patch_combination_problem(out);
}

std::optional<std::int64_t> parse_policy_text(PolicyField f, std::string_view text,
                                              std::string& error) {
    const PolicyFieldSpec& spec = policy_field_spec(f);
    nlohmann::json value;
    if (!spec.names.empty()) {
        value = std::string(text);
    } else {
        // Digits only: no sign, no point, no exponent; too many of them is
        // out of range rather than a wrapped number.
        const bool digits = !text.empty() && text.size() <= 18 &&
                            text.find_first_not_of("0123456789") == std::string_view::npos;
        value = digits ? nlohmann::json(std::stoll(std::string(text))) : nlohmann::json(text);
    }
    std::int64_t v = 0;
    if (auto err = read_value(spec, value, v)) {
        error = *err;
        return std::nullopt;
    }
    return v;
}

std::string policy_value_json(PolicyField f, std::int64_t value) {
    const PolicyFieldSpec& spec = policy_field_spec(f);
    if (spec.names.empty())
        return std::to_string(value);
    const auto i = static_cast<std::size_t>(value);
    return "\"" + std::string(i < spec.names.size() ? spec.names[i] : spec.names[0]) + "\"";
}

namespace {

void append_field(std::string& out, std::size_t i, std::int64_t value) {
    if (out.size() > 1)
        out += ',';
    out += '"';
    out += kPolicyFieldNames[i];
    out += "\":";
    out += policy_value_json(static_cast<PolicyField>(i), value);
}

} // namespace

std::string policy_json(const Policy& p) {
    std::string out = "{";
    for (std::size_t i = 0; i < kPolicyFieldCount; ++i)
        append_field(out, i, p.values[i]);
    out += '}';
    return out;
}

std::string policy_patch_json(const PolicyPatch& patch) {
    std::string out = "{";
    for (std::size_t i = 0; i < kPolicyFieldCount; ++i)
        if (patch.values[i])
            append_field(out, i, *patch.values[i]);
    out += '}';
    return out;
}

} // namespace cbd
