// Policy digests (see policy_digest.hpp).
#include "daemon/breaker/policy_digest.hpp"

#include "daemon/core/fnv1a.hpp"

#include <algorithm>
#include <charconv>

namespace cbd {

namespace {

// The digest's own starting value (FNV's offset basis with a digit short,
// as the first version had it): hosts of one fleet compare digests, so it
// stays what every running cbd computes.
constexpr std::uint64_t kPolicyDigestBasis = 1469598103934665603ull;

bool is_hex_digest(std::string_view s) {
    return s.size() == 16 && std::all_of(s.begin(), s.end(), [](char c) {
               return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
           });
}

} // namespace

std::string policy_digest(const PolicyConfig& config) {
    PolicySet defaults_only;
    defaults_only.set_config(PolicyConfig{config.defaults, {}});
    PolicySet all;
    all.set_config(config);
    // Each part is length-prefixed, so no prefix can forge a boundary.
    std::string canonical;
    auto add = [&](std::string_view part) {
        canonical += std::to_string(part.size());
        canonical += ':';
        canonical += part;
    };
    add(policy_json(defaults_only.effective("")));
    std::vector<std::string> prefixes;
    for (const auto& rule : config.rules)
        prefixes.push_back(rule.prefix);
    std::sort(prefixes.begin(), prefixes.end());
    prefixes.erase(std::unique(prefixes.begin(), prefixes.end()), prefixes.end());
    for (const auto& prefix : prefixes) {
        add(prefix);
        add(policy_json(all.effective(prefix)));
    }
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out(16, '0');
    auto h = fnv1a(canonical, kPolicyDigestBasis);
    for (int i = 15; i >= 0; --i, h >>= 4)
        out[static_cast<std::size_t>(i)] = kHex[h & 0xf];
    return out;
}

std::string policy_entry(std::string_view digest, std::int64_t at_ms) {
    return std::string(digest) + " " + std::to_string(at_ms);
}

std::optional<PolicyEntry> parse_policy_entry(std::string_view value) {
    if (value.size() > 64)
        return std::nullopt;
    const auto space = value.find(' ');
    if (space == std::string_view::npos)
        return std::nullopt;
    PolicyEntry e;
    const auto digest = value.substr(0, space);
    if (!is_hex_digest(digest))
        return std::nullopt;
    e.digest = std::string(digest);
    const auto at = value.substr(space + 1);
    auto [end, ec] = std::from_chars(at.data(), at.data() + at.size(), e.at_ms);
    if (ec != std::errc() || end != at.data() + at.size() || e.at_ms < 0)
        return std::nullopt;
    return e;
}

std::vector<std::string>
policy_mismatches(std::string_view self, std::string_view digest, std::int64_t now_ms,
                  const std::vector<std::pair<std::string, std::string>>& entries) {
    std::vector<std::string> hosts;
    const std::int64_t live_ms = kPolicyDigestIntervalMs * kPolicyDigestLiveIntervals;
    const std::size_t n = std::min(entries.size(), kMaxPolicyHosts);
    for (std::size_t i = 0; i < n; ++i) {
        const auto& [host, value] = entries[i];
        if (host == self || host.empty() || host.size() > kMaxPolicyHostBytes)
            continue;
        const auto e = parse_policy_entry(value);
        if (!e || now_ms - e->at_ms > live_ms || e->at_ms - now_ms > live_ms)
            continue; // not live (or from a clock far ahead: not trusted either)
        if (e->digest != digest)
            hosts.push_back(host);
    }
    return hosts;
}

std::vector<std::string>
forgotten_policy_hosts(std::int64_t now_ms,
                       const std::vector<std::pair<std::string, std::string>>& entries) {
    std::vector<std::string> hosts;
    const std::size_t n = std::min(entries.size(), kMaxPolicyHosts);
    for (std::size_t i = 0; i < n; ++i) {
        const auto e = parse_policy_entry(entries[i].second);
        if (!e || now_ms - e->at_ms > kPolicyDigestForgetMs)
            hosts.push_back(entries[i].first);
    }
    return hosts;
}

} // namespace cbd
