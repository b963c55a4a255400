// Which policy applies to a key: the daemon defaults (built in, then the
// config file, then flags), the longest matching prefix rule, and the key's
// own override, each field taken from the most specific layer that sets it.
#pragma once

#include "common/policy.hpp"

#include <array>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace cbd {

struct PolicyRule {
    std::string prefix;
    PolicyPatch patch;
};

// What the config file and flags provide; replaced whole on SIGHUP.
struct PolicyConfig {
    PolicyPatch defaults;
    std::vector<PolicyRule> rules;
};

enum class PolicySource : std::uint8_t { Default, Prefix, Key };
std::string_view policy_source_name(PolicySource s);

struct ResolvedPolicy {
    Policy policy;
    std::array<PolicySource, kPolicyFieldCount> sources{};
    std::string prefix; // the matching rule's prefix, empty when none matched
    // Whether some layer set probeLeaseMs; when none does, the lease is the
    // resolved resetTimeoutMs (and takes its source).
    bool lease_set = false;
    // The same for resetTimeoutMaxMs: unset, there is no backoff.
    bool timeout_max_set = false;
};

class PolicySet {
  public:
    void set_config(PolicyConfig config);

    Policy effective(std::string_view key) const { return resolve(key).policy; }
    ResolvedPolicy resolve(std::string_view key) const {
        return resolve_with(key, key_override(key));
    }
    // The same with `own` as the key's override (nullptr: none), for a
    // backend that keeps overrides elsewhere (Redis).
    ResolvedPolicy resolve_with(std::string_view key, const PolicyPatch* own) const;

    // Per-key overrides (the `configure` op). An empty patch removes the entry.
    const PolicyPatch* key_override(std::string_view key) const;
    void set_key_override(std::string_view key, const PolicyPatch& patch);
    std::size_t override_count() const { return overrides_.size(); }
    // Keys with an override, in order: those starting with `prefix` after
    // `after` (exclusive; empty = from the start), at most `limit`.
    std::vector<std::string> override_keys(std::string_view prefix, std::string_view after,
                                           std::size_t limit) const;

  private:
    PolicyConfig config_;
    // Ordered, for export; overrides are few and set by operators, and a
    // daemon without any pays one empty() check per lookup.
    std::map<std::string, PolicyPatch, std::less<>> overrides_;
};

} // namespace cbd
