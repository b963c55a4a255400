// The policy configuration file and policy patches.
#include "daemon/config/config_file.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

using namespace cbd;

TEST_CASE("a full configuration file parses", "[config]") {
    auto file = parse_config(R"({
        "defaults": {"failureThreshold": 7, "resetTimeoutMs": 1000},
        "policies": [
            {"prefix": "payments/", "failureThreshold": 3},
            {"prefix": "search/", "halfOpenMax": 2, "probeLeaseMs": 500}
        ],
        "writerGroup": "cbd-writers", "adminGroup": "0"})");
    const auto& c = file.policy;
    CHECK(file.writer_group == "cbd-writers");
    CHECK(file.admin_group == "0");
    CHECK(c.defaults[PolicyField::FailureThreshold] == 7);
    CHECK(c.defaults[PolicyField::ResetTimeoutMs] == 1000);
    REQUIRE(c.rules.size() == 2);
    CHECK(c.rules[0].prefix == "payments/");
    CHECK(c.rules[1].patch[PolicyField::ProbeLeaseMs] == 500);
    CHECK(parse_config("{}").policy.rules.empty());
    CHECK(parse_config("{}").writer_group.empty());
}

TEST_CASE("a bad configuration file is refused with a reason", "[config]") {
    auto reason = [](const std::string& text) {
        try {
            parse_config(text);
        } catch (const ConfigError& e) {
            return std::string(e.what());
        }
        FAIL("accepted: " << text);
        return std::string();
    };
    CHECK(reason("{").rfind("not valid JSON: parse error at line 1, column 2:", 0) == 0);
    CHECK(reason("[]").find("object") != std::string::npos);
    CHECK(reason(R"({"defualts":{}})").find("defualts") != std::string::npos);
    CHECK(reason(R"({"defaults":{"failureThreshold":0}})").find("failureThreshold") !=
          std::string::npos);
    CHECK(reason(R"({"defaults":{"failureThreshold":-1}})").find("failureThreshold") !=
          std::string::npos);
    CHECK(reason(R"({"defaults":{"resetTimeoutMs":1.5}})").find("resetTimeoutMs") !=
          std::string::npos);
    CHECK(reason(R"({"defaults":{"halfOpenMax":"2"}})").find("halfOpenMax") != std::string::npos);
    CHECK(reason(R"({"defaults":{"bogus":1}})").find("bogus") != std::string::npos);
    CHECK(reason(R"({"policies":{}})").find("array") != std::string::npos);
    CHECK(reason(R"({"policies":[{"failureThreshold":1}]})").find("policies[0]") !=
          std::string::npos);
    CHECK(reason(R"({"policies":[{"prefix":""}]})").find("policies[0]") != std::string::npos);
    CHECK(reason(R"({"policies":[{"prefix":"a"},{"prefix":"a"}]})").find("twice") !=
          std::string::npos);
    CHECK(reason(R"({"adminGroup":7})").find("adminGroup") != std::string::npos);
    CHECK(reason(R"({"writerGroup":""})").find("writerGroup") != std::string::npos);
}

TEST_CASE("policy patches take positive integers only", "[config]") {
    PolicyPatch p;
    CHECK_FALSE(parse_policy_patch(nlohmann::json::parse(R"({"successThreshold":2})"), p));
    CHECK(p[PolicyField::SuccessThreshold] == 2);
    CHECK(parse_policy_patch(nlohmann::json::parse(R"({"successThreshold":true})"), p));
    CHECK(parse_policy_patch(nlohmann::json::parse(R"({"successThreshold":null})"), p));
    CHECK(parse_policy_patch(nlohmann::json::parse(R"({"successThreshold":2.0})"), p));
    CHECK(parse_policy_patch(nlohmann::json::parse(R"({"successThreshold":18446744073709551615})"),
                             p));
    PolicyPatch removed;
    CHECK_FALSE(parse_policy_patch(nlohmann::json::parse(R"({"successThreshold":null})"), p, true,
                                   &removed));
    CHECK_FALSE(p[PolicyField::SuccessThreshold]);
    CHECK(removed[PolicyField::SuccessThreshold]);
}
