// PolicySet (see policy_set.hpp).
#include "daemon/breaker/policy_set.hpp"

namespace cbd {

std::string_view policy_source_name(PolicySource s) {
    switch (s) {
    case PolicySource::Default:
        return "default";
    case PolicySource::Prefix:
        return "prefix";
    case PolicySource::Key:
        return "key";
    }
    return "default";
}

void PolicySet::set_config(PolicyConfig config) {
    config_ = std::move(config);
}

ResolvedPolicy PolicySet::resolve_with(std::string_view key, const PolicyPatch* own) const {
    ResolvedPolicy r;
    auto apply = [&](const PolicyPatch& patch, PolicySource source) {
        for (std::size_t i = 0; i < kPolicyFieldCount; ++i) {
            if (!patch.values[i])
                continue;
            r.policy.set(static_cast<PolicyField>(i), *patch.values[i]);
            r.sources[i] = source;
            if (static_cast<PolicyField>(i) == PolicyField::ProbeLeaseMs)
                r.lease_set = true;
            if (static_cast<PolicyField>(i) == PolicyField::ResetTimeoutMaxMs)
                r.timeout_max_set = true;
        }
    };

    apply(config_.defaults, PolicySource::Default);
    const PolicyRule* best = nullptr;
    for (const auto& rule : config_.rules)
        if (key.starts_with(rule.prefix) && (!best || rule.prefix.size() > best->prefix.size()))
            best = &rule;
    if (best) {
        apply(best->patch, PolicySource::Prefix);
        r.prefix = best->prefix;
    }
    if (own)
        apply(*own, PolicySource::Key);

    // Unless some layer sets them, a probe's lease and the longest open
    // time are the reset timeout (and take its source).
    const auto timeout = static_cast<std::size_t>(PolicyField::ResetTimeoutMs);
    auto follow_timeout = [&](PolicyField f) {
        r.policy.set(f, r.policy.reset_timeout_ms());
        r.sources[static_cast<std::size_t>(f)] = r.sources[timeout];
    };
    if (!r.lease_set)
        follow_timeout(PolicyField::ProbeLeaseMs);
    if (!r.timeout_max_set)
        follow_timeout(PolicyField::ResetTimeoutMaxMs);
    return r;
}

const PolicyPatch* PolicySet::key_override(std::string_view key) const {
    if (overrides_.empty())
        return nullptr;
    auto it = overrides_.find(key);
    return it == overrides_.end() ? nullptr : &it->second;
}

void PolicySet::set_key_override(std::string_view key, const PolicyPatch& patch) {
    if (patch.empty()) {
        if (auto it = overrides_.find(key); it != overrides_.end())
            overrides_.erase(it);
        return;
    }
    if (auto it = overrides_.find(key); it != overrides_.end())
        it->second = patch;
    else
        overrides_.emplace(std::string(key), patch);
}

std::vector<std::string> PolicySet::override_keys(std::string_view prefix, std::string_view after,
                                                  std::size_t limit) const {
    std::vector<std::string> keys;
    const bool from_after = !after.empty() && after >= prefix;
    auto it = from_after ? overrides_.upper_bound(after) : overrides_.lower_bound(prefix);
    for (; it != overrides_.end() && keys.size() < limit; ++it) {
        if (!it->first.starts_with(prefix))
            break;
        keys.push_back(it->first);
    }
    return keys;
}

} // namespace cbd
