// Policy digests: equal for configurations that resolve every key alike,
// different otherwise; entries in Redis parsed strictly; only live hosts
// compared, at most kMaxPolicyHosts of them.
#include "daemon/breaker/policy_digest.hpp"

#include <catch2/catch.hpp>

namespace {

cbd::PolicyConfig config(std::int64_t threshold,
                         std::vector<std::pair<std::string, std::int64_t>> rules) {
    cbd::PolicyConfig c;
    c.defaults.values[static_cast<std::size_t>(cbd::PolicyField::FailureThreshold)] = threshold;
    for (auto& [prefix, timeout] : rules) {
        cbd::PolicyRule r;
        r.prefix = prefix;
        r.patch.values[static_cast<std::size_t>(cbd::PolicyField::ResetTimeoutMs)] = timeout;
        c.rules.push_back(r);
    }
    return c;
}

} // namespace

TEST_CASE("the policy digest follows the effective policy, not the layout", "[policy-digest]") {
    const auto a = cbd::policy_digest(config(5, {{"db/", 1000}, {"api/", 2000}}));
    CHECK(a.size() == 16);
    CHECK(a.find_first_not_of("0123456789abcdef") == std::string::npos);
    CHECK(a == cbd::policy_digest(config(5, {{"api/", 2000}, {"db/", 1000}}))); // rule order
    // The built-in default threshold is 5: saying so changes nothing.
    CHECK(cbd::policy_digest(config(5, {})) == cbd::policy_digest(cbd::PolicyConfig{}));
    CHECK(a != cbd::policy_digest(config(6, {{"db/", 1000}, {"api/", 2000}})));
    CHECK(a != cbd::policy_digest(config(5, {{"db/", 1001}, {"api/", 2000}})));
    CHECK(a != cbd::policy_digest(config(5, {{"db/", 1000}})));
    CHECK(a != cbd::policy_digest(config(5, {{"db", 1000}, {"api/", 2000}})));
}

TEST_CASE("policy entries parse strictly", "[policy-digest]") {
    const auto value = cbd::policy_entry("0123456789abcdef", 1764201600000);
    CHECK(value == "0123456789abcdef 1764201600000");
    auto e = cbd::parse_policy_entry(value);
    REQUIRE(e);
    CHECK((e->digest == "0123456789abcdef" && e->at_ms == 1764201600000));
    for (const char* bad :
         {"", "0123456789abcdef", "0123456789ABCDEF 1", "0123 1", "0123456789abcdef -1",
          "0123456789abcdef 1x", "0123456789abcdef  1", "0123456789abcdef 99999999999999999999"})
        CHECK_FALSE(cbd::parse_policy_entry(bad));
}

TEST_CASE("only other live hosts with another digest are mismatches", "[policy-digest]") {
    const std::int64_t now = 1'000'000'000;
    const std::string mine = "aaaaaaaaaaaaaaaa", other = "bbbbbbbbbbbbbbbb";
    const auto live = now - cbd::kPolicyDigestIntervalMs;
    const auto stale = now - cbd::kPolicyDigestIntervalMs * (cbd::kPolicyDigestLiveIntervals + 1);
    std::vector<std::pair<std::string, std::string>> entries{
        {"me:/run/cbd/cbd.sock", cbd::policy_entry(other, live)}, // self: never compared
        {"same:/s", cbd::policy_entry(mine, live)},
        {"differs:/s", cbd::policy_entry(other, live)},
        {"gone:/s", cbd::policy_entry(other, stale)},
        {"future:/s", cbd::policy_entry(other, now + 3600 * 1000)},
        {"garbage:/s", "not an entry"},
        {std::string(400, 'h'), cbd::policy_entry(other, live)},
    };
    CHECK(cbd::policy_mismatches("me:/run/cbd/cbd.sock", mine, now, entries) ==
          std::vector<std::string>{"differs:/s"});
    CHECK(cbd::policy_mismatches("me:/run/cbd/cbd.sock", other, now, entries) ==
          std::vector<std::string>{"same:/s"});
    // Bounded: entries past kMaxPolicyHosts are not examined.
    std::vector<std::pair<std::string, std::string>> many;
    for (std::size_t i = 0; i < cbd::kMaxPolicyHosts + 10; ++i)
        many.emplace_back("h" + std::to_string(i), cbd::policy_entry(other, live));
    CHECK(cbd::policy_mismatches("me", mine, now, many).size() == cbd::kMaxPolicyHosts);
    // An hour gone, or unreadable: deleted.
    auto gone = cbd::forgotten_policy_hosts(
        now, {{"old", cbd::policy_entry(other, now - cbd::kPolicyDigestForgetMs - 1)},
              {"bad", "x"},
              {"fresh", cbd::policy_entry(other, stale)}});
    CHECK(gone == std::vector<std::string>{"old", "bad"});
}

TEST_CASE("the digest of the defaults is what every cbd computes", "[policy-digest]") {
    // Hosts of one fleet compare digests during a rolling upgrade: a change
    // here would show every older host as disagreeing.
    CHECK(cbd::policy_digest(cbd::PolicyConfig{}) == "b3e90207cbcf61d3");
}
