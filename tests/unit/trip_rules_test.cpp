// Trip rules (issue 16) in the policy and the memory store, with a
// hand-driven clock: field parsing and bounds, the backoff's open time, the
// consecutive and rate rules, the modes, and the trip-rule state the state
// file keeps. The same rules on Redis are proven by the conformance corpus
// (tests/conformance/cases/trip_rules.json).
#include "common/policy.hpp"
#include "daemon/backends/memory/memory_store.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

using namespace cbd;

namespace {

constexpr std::int64_t kTripStart = 1'000'000'000'000;

PolicyPatch parse(const char* json) {
    PolicyPatch p;
    auto err = parse_policy_patch(nlohmann::json::parse(json), p);
    INFO(json << ": " << err.value_or(""));
    REQUIRE_FALSE(err);
    return p;
}

std::string refusal(const char* json) {
    PolicyPatch p;
    return parse_policy_patch(nlohmann::json::parse(json), p).value_or("");
}

struct Store {
    ManualClock clock{kTripStart};
    MemoryCircuitStore store{clock, 1000};

    void configure(const char* json) {
        auto r = store.configure("k", parse(json), {}, false);
        INFO(r.message);
        REQUIRE_FALSE(r.error);
    }
    ReportResult report(Outcome o, std::optional<std::int64_t> duration = std::nullopt,
                        std::string_view permit = {}) {
        return store.report("k", o, std::nullopt, permit, duration);
    }
};

} // namespace

TEST_CASE("policy fields of names read and write as names", "[trip]") {
    const auto p = parse(R"({"tripRule":"rate","windowType":"time","mode":"observe"})");
    CHECK(p[PolicyField::TripRule] == static_cast<std::int64_t>(TripRule::Rate));
    CHECK(p[PolicyField::WindowType] == static_cast<std::int64_t>(WindowType::Time));
    CHECK(p[PolicyField::Mode] == static_cast<std::int64_t>(BreakerMode::Observe));
    CHECK(policy_patch_json(p) == R"({"tripRule":"rate","windowType":"time","mode":"observe"})");
    const auto all = nlohmann::json::parse(policy_json(Policy{}));
    CHECK(all.size() == kPolicyFieldCount);
    CHECK(all["tripRule"] == "count");
    CHECK(all["slowCallDurationMs"] == 0);
    CHECK(all["failureRateThreshold"] == 50);
}

TEST_CASE("policy fields are bounded and name the field when refused", "[trip]") {
    CHECK(refusal(R"({"tripRule":"ratio"})").find("tripRule") != std::string::npos);
    CHECK(refusal(R"({"tripRule":2})").find("tripRule") != std::string::npos);
    CHECK(refusal(R"({"failureRateThreshold":0})").find("failureRateThreshold") !=
          std::string::npos);
    CHECK(refusal(R"({"slowCallRateThreshold":101})").find("slowCallRateThreshold") !=
          std::string::npos);
    CHECK(refusal(R"({"windowSize":3600001})").find("windowSize") != std::string::npos);
    CHECK(refusal(R"({"windowType":"count","windowSize":10001})").find("windowSize") !=
          std::string::npos);
    CHECK(refusal(R"({"resetTimeoutMs":100,"resetTimeoutMaxMs":99})").find("resetTimeoutMaxMs") !=
          std::string::npos);
    CHECK(refusal(R"({"slowCallDurationMs":-1})").find("slowCallDurationMs") != std::string::npos);
    parse(R"({"slowCallDurationMs":0,"windowType":"time","windowSize":3600000})");
    parse(R"({"windowSize":10001})"); // a time window may be that long; the layers decide
}

TEST_CASE("command-line flags and values follow the field table", "[trip]") {
    CHECK(policy_flag_name(PolicyField::FailureRateThreshold) == "--failure-rate-threshold");
    CHECK(policy_flag_name(PolicyField::ResetTimeoutMaxMs) == "--reset-timeout-max-ms");
    std::string error;
    CHECK(parse_policy_text(PolicyField::Mode, "disabled", error) == 2);
    CHECK(parse_policy_text(PolicyField::WindowSize, "250", error) == 250);
    CHECK_FALSE(parse_policy_text(PolicyField::WindowSize, "-5", error));
    CHECK(error.find("windowSize") != std::string::npos);
    CHECK_FALSE(parse_policy_text(PolicyField::MinimumCalls, "99999999999999999999", error));
    CHECK_FALSE(parse_policy_text(PolicyField::TripRule, "Rate", error));
}

TEST_CASE("the open time doubles per re-open up to the maximum", "[trip]") {
    Policy p;
    p.set(PolicyField::ResetTimeoutMs, 300);
    p.set(PolicyField::ResetTimeoutMaxMs, 1200);
    CHECK(p.open_time_ms(0) == 300);
    CHECK(p.open_time_ms(1) == 600);
    CHECK(p.open_time_ms(2) == 1200);
    CHECK(p.open_time_ms(62) == 1200);
    p.set(PolicyField::ResetTimeoutMaxMs, 100); // below the timeout: never shorter than it
    CHECK(p.open_time_ms(3) == 300);
    p.set(PolicyField::ResetTimeoutMs, kMaxPolicyValue);
    p.set(PolicyField::ResetTimeoutMaxMs, kMaxPolicyValue);
    CHECK(p.open_time_ms(62) == kMaxPolicyValue);
}

TEST_CASE("configure refuses a combination across layers", "[trip]") {
    Store s;
    s.configure(R"({"resetTimeoutMs":1000})");
    auto r = s.store.configure("k", parse(R"({"resetTimeoutMaxMs":999})"), {}, false);
    REQUIRE(r.error == ErrorCode::InvalidRequest);
    CHECK(r.message.find("resetTimeoutMaxMs") != std::string::npos);
    CHECK(s.store.policy("k").resolved.policy.reset_timeout_max_ms() == 1000); // unchanged
    s.configure(R"({"windowType":"time","windowSize":50000})");
    CHECK(s.store.configure("k", parse(R"({"windowType":"count"})"), {}, false).error ==
          ErrorCode::InvalidRequest);
}

TEST_CASE("a count-rule circuit keeps no trip-rule state", "[trip]") {
    Store s;
    for (int i = 0; i < 3; ++i)
        s.report(Outcome::Failure);
    CHECK(s.store.stored("k").rule.empty());
    CHECK_FALSE(s.report(Outcome::Success).circuit.window);
}

TEST_CASE("consecutive: a success ends the run", "[trip]") {
    Store s;
    s.configure(R"({"tripRule":"consecutive","failureThreshold":2})");
    s.report(Outcome::Failure);
    s.report(Outcome::Success);
    CHECK(s.store.stored("k").rule.empty()); // nothing left to keep
    CHECK_FALSE(s.report(Outcome::Failure).transition);
    auto r = s.report(Outcome::Failure);
    REQUIRE(r.transition);
    CHECK(r.transition->cause == TransitionCause::Consecutive);
}

TEST_CASE("rate: a count window judges at most its size, with integers", "[trip]") {
    Store s;
    s.configure(R"({"tripRule":"rate","windowSize":3,"failureRateThreshold":67})");
    s.report(Outcome::Failure);
    CHECK_FALSE(s.report(Outcome::Failure).transition); // 2 calls < min(100, 3)
    // 2 of 3 is 66.67%: below 67 (200 < 201), so it stays closed.
    auto r = s.report(Outcome::Success);
    CHECK_FALSE(r.transition);
    REQUIRE(r.circuit.window);
    CHECK(*r.circuit.window == window_view(3, 2, 0));
    CHECK(r.circuit.window->failure_rate == 66);
    // The oldest failure leaves: 1 of 3.
    CHECK(s.report(Outcome::Success).circuit.window->failures == 1);
    s.configure(R"({"failureRateThreshold":66})");
    s.report(Outcome::Failure);
    auto opened = s.report(Outcome::Failure); // F S F F -> the last three: S F F
    REQUIRE(opened.transition);
    CHECK(opened.transition->cause == TransitionCause::FailureRate);
    CHECK(opened.circuit.window->calls == 0); // a new period, a new window
}

TEST_CASE("rate: a time window keeps ten buckets and forgets older ones", "[trip]") {
    Store s;
    s.configure(R"({"tripRule":"rate","windowType":"time","windowSize":1000,"minimumCalls":50})");
    for (int i = 0; i < 10; ++i) {
        s.report(Outcome::Failure);
        s.clock.advance(100);
    }
    // t = 1000: buckets 1..10 count; the one of t = 0 has left.
    auto w = s.report(Outcome::Success).circuit.window;
    REQUIRE(w);
    CHECK(w->calls == 10);
    CHECK(w->failures == 9);
    s.clock.advance(5000);
    CHECK(s.store.acquire("k").circuit.window->calls == 0);
}

TEST_CASE("slow calls need slowCallDurationMs and a duration", "[trip]") {
    Store s;
    s.configure(R"({"tripRule":"rate","windowSize":4,"slowCallDurationMs":100})");
    CHECK(s.report(Outcome::Success, 99).circuit.window->slow == 0);
    CHECK(s.report(Outcome::Success).circuit.window->slow == 0);
    CHECK(s.report(Outcome::Failure, 100).circuit.window->slow == 1);
}

TEST_CASE("observe decides but allows; disabled allows and records nothing", "[trip]") {
    Store s;
    s.configure(R"({"mode":"observe","failureThreshold":1})");
    REQUIRE(s.report(Outcome::Failure).transition);
    auto a = s.store.acquire("k");
    CHECK(a.allowed);
    CHECK(a.circuit.would_deny);
    CHECK(a.retry_after_ms == 0);
    CHECK(a.permit.empty());

    s.configure(R"({"mode":"disabled"})");
    auto d = s.store.acquire("k");
    CHECK(d.allowed);
    CHECK_FALSE(d.circuit.would_deny);
    const auto before = s.store.get("k").circuit;
    s.report(Outcome::Failure);
    CHECK(s.store.get("k").circuit.snapshot == before.snapshot);
}

TEST_CASE("ignored hands the permit back and counts nowhere", "[trip]") {
    Store s;
    s.configure(R"({"failureThreshold":1,"resetTimeoutMs":10})");
    s.report(Outcome::Failure);
    s.clock.advance(10);
    auto probe = s.store.acquire("k");
    REQUIRE(probe.allowed);
    CHECK_FALSE(s.store.acquire("k").allowed);
    auto r = s.report(Outcome::Ignored, std::nullopt, probe.permit);
    CHECK_FALSE(r.error);
    CHECK_FALSE(r.transition);
    CHECK(r.circuit.snapshot.failure_count == 1);
    CHECK(s.store.acquire("k").allowed);
}

TEST_CASE("backoff counts re-opens in a row; closing starts over", "[trip]") {
    Store s;
    s.configure(R"({"failureThreshold":1,"resetTimeoutMs":100,"resetTimeoutMaxMs":1000})");
    s.report(Outcome::Failure);
    std::int64_t wait = 100;
    for (std::int64_t expected : {200, 400, 800, 1000, 1000}) {
        s.clock.advance(wait);
        auto probe = s.store.acquire("k");
        REQUIRE(probe.allowed);
        s.report(Outcome::Failure, std::nullopt, probe.permit);
        wait = s.store.acquire("k").retry_after_ms;
        CHECK(wait == expected);
    }
    s.clock.advance(wait);
    auto probe = s.store.acquire("k");
    s.report(Outcome::Success, std::nullopt, probe.permit);
    CHECK(s.store.stored("k").rule.empty());
    s.report(Outcome::Failure);
    CHECK(s.store.acquire("k").retry_after_ms == 100);
}

TEST_CASE("trip-rule state round-trips through stored() and restore()", "[trip]") {
    Store s;
    s.configure(R"({"tripRule":"rate","windowSize":5,"minimumCalls":5})");
    s.report(Outcome::Failure, 10);
    s.report(Outcome::Success);
    const StoredCircuit record = s.store.stored("k");
    REQUIRE_FALSE(record.rule.empty());

    Store t;
    REQUIRE_FALSE(t.store.restore(record));
    CHECK(t.store.stored("k") == record);
    CHECK(*t.store.acquire("k").circuit.window == window_view(2, 1, 0));

    StoredCircuit bad = record;
    for (const char* text :
         {"[]", "{\"reopens\":63}", "{\"run\":-1}",
          "{\"window\":{\"type\":\"count\",\"size\":2,\"calls\":\"012\"}}",
          "{\"window\":{\"type\":\"count\",\"size\":3,\"calls\":\"4\"}}",
          "{\"window\":{\"type\":\"time\",\"size\":1000,\"buckets\":[[1,2,3]]}}", "not json"}) {
        INFO(text);
        bad.rule = text;
        CHECK(t.store.restore(bad) == ErrorCode::InvalidRequest);
    }
    CHECK(t.store.stored("k") == record); // a refused restore changed nothing
}
