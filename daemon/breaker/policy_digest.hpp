// Whether the hosts sharing one Redis apply the same policy. Defaults and
// prefix rules come from each host's own config, so two hosts with
// different files apply different rules to one circuit. Each cbd publishes a
// digest of its effective defaults and prefix rules in Redis (`P`
// `policy-digests`: field = host, value = "DIGEST TIME_MS", time from
// Redis), reads the others' (at most kMaxPolicyHosts a round) and reports
// the live hosts whose digest differs. The pure parts live here; the
// exchange is in RedisStore.
#pragma once

#include "daemon/breaker/policy_set.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cbd {

// How often each cbd writes its entry and reads the others'.
inline constexpr std::int64_t kPolicyDigestIntervalMs = 5000;
// An entry older than this many intervals is a host that is gone (or whose
// Redis link is down): not live, not compared, and deleted when much older.
inline constexpr std::int64_t kPolicyDigestLiveIntervals = 3;
inline constexpr std::int64_t kPolicyDigestForgetMs = 3600 * 1000;
// Most entries one round examines (and a bound on what Redis answers).
inline constexpr std::size_t kMaxPolicyHosts = 64;
// A host field longer than this is not cbd's.
inline constexpr std::size_t kMaxPolicyHostBytes = 300;

// 16 hex digits (FNV-1a, 64 bits) over the effective defaults and each
// prefix rule's effective policy, rules in prefix order: two configurations
// that resolve every key alike have one digest, whatever their layout.
std::string policy_digest(const PolicyConfig& config);

// The value stored for a host, and back (nullopt for anything else).
std::string policy_entry(std::string_view digest, std::int64_t at_ms);
struct PolicyEntry {
    std::string digest;
    std::int64_t at_ms = 0;
};
std::optional<PolicyEntry> parse_policy_entry(std::string_view value);

// The hosts (other than `self`) whose entry is live at `now_ms` and whose
// digest is not `digest`, in the order given, at most kMaxPolicyHosts
// examined. Entries that do not parse are skipped.
std::vector<std::string>
policy_mismatches(std::string_view self, std::string_view digest, std::int64_t now_ms,
                  const std::vector<std::pair<std::string, std::string>>& entries);

// Entries old enough to delete (a host gone for an hour), at most
// kMaxPolicyHosts of those given.
std::vector<std::string>
forgotten_policy_hosts(std::int64_t now_ms,
                       const std::vector<std::pair<std::string, std::string>>& entries);

} // namespace cbd
