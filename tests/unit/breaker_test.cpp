// The breaker policy in MemoryCircuitStore, with a hand-driven clock: the
// reference policy's own cases, then what cbd adds (shared probe permits,
// generations, leases, pins, policies).
#include "daemon/backends/memory/memory_store.hpp"

#include <catch2/catch.hpp>
#include <vector>

using namespace cbd;

namespace {

constexpr std::int64_t kBreakerStart = 1'764'201'600'000;

struct Recorder final : CircuitObserver {
    std::vector<TransitionRecord> transitions;
    std::vector<std::string> keys;
    int resets = 0;
    void on_transition(std::string_view key, const TransitionRecord& t,
                       const CircuitView&) override {
        transitions.push_back(t);
        keys.emplace_back(key);
    }
    void on_reset(std::string_view, std::int64_t) override { ++resets; }
};

struct Breaker {
    ManualClock clock{kBreakerStart};
    Recorder events;
    MemoryCircuitStore store{clock, 1000, &events};

    ReportResult fail(std::string_view key) {
        return store.report(key, Outcome::Failure, std::nullopt, {});
    }
    ReportResult succeed(std::string_view key) {
        return store.report(key, Outcome::Success, std::nullopt, {});
    }
    void trip(std::string_view key, int failures = 5) {
        for (int i = 0; i < failures; ++i)
            fail(key);
    }
};

PolicyPatch patch(PolicyField f, std::int64_t v) {
    PolicyPatch p;
    p[f] = v;
    return p;
}

} // namespace

TEST_CASE("below the threshold the circuit stays closed", "[breaker]") {
    Breaker b;
    for (int i = 0; i < 4; ++i) {
        auto r = b.fail("api");
        CHECK_FALSE(r.transition);
        CHECK(r.circuit.snapshot.state == State::Closed);
    }
    CHECK(b.store.acquire("api").allowed);
}

TEST_CASE("the default threshold is 5 and its failure opens the circuit", "[breaker]") {
    Breaker b;
    b.trip("api", 4);
    auto r = b.fail("api");
    REQUIRE(r.transition);
    CHECK(r.transition->from == State::Closed);
    CHECK(r.transition->to == State::Open);
    CHECK(r.transition->cause == TransitionCause::Threshold);
    CHECK(r.circuit.snapshot.state == State::Open);
    CHECK(r.circuit.snapshot.failure_count == 5); // opening keeps the count
}

TEST_CASE("successes in closed do not reset the failure count", "[breaker]") {
    Breaker b;
    b.trip("api", 4);
    b.succeed("api");
    CHECK(b.fail("api").circuit.snapshot.state == State::Open);
}

TEST_CASE("an open circuit denies with a retry within the reset timeout", "[breaker]") {
    Breaker b;
    b.trip("api");
    b.clock.advance(10'000);
    auto r = b.store.acquire("api");
    CHECK_FALSE(r.allowed);
    CHECK(r.retry_after_ms == 20'000);
    CHECK(r.retry_after_ms > 0);
    CHECK(r.retry_after_ms <= 30'000);
    CHECK(r.permit.empty());
}

TEST_CASE("after the timeout exactly halfOpenMax probes are let through", "[breaker]") {
    Breaker b;
    b.trip("api");
    const auto opened = b.store.get("api").circuit.generation;
    b.clock.advance(30'000);
    auto first = b.store.acquire("api");
    CHECK(first.allowed);
    CHECK_FALSE(first.permit.empty());
    REQUIRE(first.transition);
    CHECK(first.transition->cause == TransitionCause::Timeout);
    CHECK(first.circuit.snapshot.state == State::HalfOpen);
    CHECK(first.circuit.generation > opened);

    auto second = b.store.acquire("api");
    CHECK_FALSE(second.allowed);
    CHECK(second.retry_after_ms == 30'000);
    CHECK_FALSE(second.transition); // the transition happened once
    CHECK(second.circuit.generation == first.circuit.generation);
}

TEST_CASE("halfOpenMax above one hands out that many distinct permits", "[breaker]") {
    Breaker b;
    b.store.configure("api", patch(PolicyField::HalfOpenMax, 3), {}, false);
    b.trip("api");
    b.clock.advance(30'000);
    std::vector<std::string> permits;
    for (int i = 0; i < 5; ++i) {
        auto r = b.store.acquire("api");
        if (r.allowed)
            permits.push_back(r.permit);
    }
    REQUIRE(permits.size() == 3);
    CHECK(permits[0] != permits[1]);
    CHECK(permits[1] != permits[2]);
    int half_open_moves = 0;
    for (auto& t : b.events.transitions)
        half_open_moves += t.to == State::HalfOpen;
    CHECK(half_open_moves == 1);
}

TEST_CASE("a successful probe closes the circuit", "[breaker]") {
    Breaker b;
    b.trip("api");
    b.clock.advance(30'000);
    auto a = b.store.acquire("api");
    auto r = b.store.report("api", Outcome::Success, a.circuit.generation, a.permit);
    REQUIRE(r.transition);
    CHECK(r.transition->cause == TransitionCause::ProbeSuccess);
    CHECK(r.circuit.snapshot ==
          Snapshot{State::Closed, 0, 0, kBreakerStart, kBreakerStart + 30'000});
    CHECK(b.store.acquire("api").allowed);
}

TEST_CASE("a failed probe re-opens the circuit", "[breaker]") {
    Breaker b;
    b.trip("api");
    b.clock.advance(30'000);
    auto a = b.store.acquire("api");
    b.clock.advance(5);
    auto r = b.store.report("api", Outcome::Failure, a.circuit.generation, a.permit);
    REQUIRE(r.transition);
    CHECK(r.transition->cause == TransitionCause::ProbeFailure);
    CHECK(r.circuit.snapshot.state == State::Open);
    CHECK(r.circuit.snapshot.failure_count == 6);
    CHECK(r.circuit.snapshot.last_state_change == kBreakerStart + 30'005);
    CHECK_FALSE(b.store.acquire("api").allowed);
}

TEST_CASE("successThreshold probes are needed to close", "[breaker]") {
    Breaker b;
    PolicyPatch p;
    p[PolicyField::SuccessThreshold] = 2;
    p[PolicyField::HalfOpenMax] = 2;
    b.store.configure("api", p, {}, false);
    b.trip("api");
    b.clock.advance(30'000);
    auto a1 = b.store.acquire("api");
    auto a2 = b.store.acquire("api");
    auto r1 = b.store.report("api", Outcome::Success, a1.circuit.generation, a1.permit);
    CHECK_FALSE(r1.transition);
    CHECK(r1.circuit.snapshot.state == State::HalfOpen);
    auto r2 = b.store.report("api", Outcome::Success, a2.circuit.generation, a2.permit);
    REQUIRE(r2.transition);
    CHECK(r2.circuit.snapshot.state == State::Closed);
}

TEST_CASE("half-open reports need a valid permit", "[breaker]") {
    Breaker b;
    b.trip("api");
    b.clock.advance(30'000);
    auto a = b.store.acquire("api");
    CHECK(b.store.report("api", Outcome::Success, std::nullopt, {}).error == ErrorCode::NoPermit);
    CHECK(b.store.report("api", Outcome::Success, std::nullopt, "forged").error ==
          ErrorCode::NoPermit);
    CHECK(b.store.get("api").circuit.snapshot.state == State::HalfOpen);
    // The permit is released when reported: it cannot be used twice.
    CHECK_FALSE(b.store.report("api", Outcome::Success, std::nullopt, a.permit).error);
    b.store.transition("api", State::HalfOpen, {});
    CHECK(b.store.report("api", Outcome::Success, std::nullopt, a.permit).error ==
          ErrorCode::NoPermit);
}

TEST_CASE("an unreported permit expires and re-opens the circuit", "[breaker]") {
    Breaker b;
    b.store.configure("api", patch(PolicyField::ProbeLeaseMs, 1000), {}, false);
    b.trip("api");
    b.clock.advance(30'000);
    auto a = b.store.acquire("api");
    REQUIRE(a.allowed);

    SECTION("noticed by the next operation on the circuit") {
        b.clock.advance(999);
        CHECK(b.store.get("api").circuit.snapshot.state == State::HalfOpen);
        b.clock.advance(1);
        auto g = b.store.get("api");
        CHECK(g.circuit.snapshot.state == State::Open);
        CHECK(g.circuit.snapshot.failure_count == 6);
        CHECK(g.circuit.snapshot.last_failure_time == kBreakerStart + 31'000);
    }
    SECTION("noticed by the expiry timer with nobody asking") {
        b.clock.advance(1000);
        b.store.expire_due();
        REQUIRE_FALSE(b.events.transitions.empty());
        CHECK(b.events.transitions.back().cause == TransitionCause::LeaseExpired);
        CHECK(b.events.transitions.back().to == State::Open);
    }
    // The late report is stale: its generation is gone.
    auto late = b.store.report("api", Outcome::Success, a.circuit.generation, a.permit);
    CHECK(late.stale);
    CHECK(late.circuit.snapshot.state == State::Open);
}

TEST_CASE("the lease defaults to the reset timeout", "[breaker]") {
    Breaker b;
    b.store.configure("api", patch(PolicyField::ResetTimeoutMs, 200), {}, false);
    CHECK(b.store.policy("api").resolved.policy.probe_lease_ms() == 200);
    b.trip("api");
    b.clock.advance(200);
    REQUIRE(b.store.acquire("api").allowed);
    b.clock.advance(200);
    CHECK(b.store.get("api").circuit.snapshot.state == State::Open);
}

TEST_CASE("a report from an earlier generation changes nothing", "[breaker]") {
    Breaker b;
    auto before = b.store.acquire("api"); // closed: allowed
    b.trip("api");                        // meanwhile it opened
    auto r = b.store.report("api", Outcome::Success, before.circuit.generation, {});
    CHECK(r.stale);
    CHECK_FALSE(r.transition);
    CHECK(r.circuit.snapshot.state == State::Open);
    CHECK(r.circuit.snapshot.success_count == 0);
}

TEST_CASE("a late report to an open circuit is recorded only", "[breaker]") {
    Breaker b;
    b.trip("api");
    auto r = b.succeed("api");
    CHECK_FALSE(r.transition);
    CHECK(r.circuit.snapshot.state == State::Open);
    CHECK(r.circuit.snapshot.success_count == 1);
    r = b.fail("api");
    CHECK(r.circuit.snapshot.failure_count == 6);
    CHECK(r.circuit.snapshot.state == State::Open);
}

TEST_CASE("conditional transitions", "[breaker]") {
    Breaker b;
    const auto g = b.store.get("api").circuit.generation;
    auto first = b.store.transition("api", State::Open, {State::Closed, std::nullopt});
    CHECK_FALSE(first.error);
    auto second = b.store.transition("api", State::Open, {State::Closed, std::nullopt});
    CHECK(second.error == ErrorCode::Conflict);
    CHECK(second.circuit.snapshot.state == State::Open);
    CHECK(second.circuit.generation == first.circuit.generation);

    CHECK(b.store.transition("api", State::Closed, {std::nullopt, g}).error == ErrorCode::Conflict);
    CHECK_FALSE(
        b.store.transition("api", State::Closed, {std::nullopt, first.circuit.generation}).error);
}

TEST_CASE("every change takes a new generation, never reused across reset", "[breaker]") {
    Breaker b;
    auto g1 = b.store.get("api").circuit.generation;
    b.fail("api"); // counting is not a state change
    CHECK(b.store.get("api").circuit.generation == g1);
    auto g2 = b.store.transition("api", State::Open, {}).circuit.generation;
    CHECK(g2 > g1);
    auto g3 = b.store.transition("api", State::Open, {}).circuit.generation;
    CHECK(g3 > g2);
    b.store.reset("api");
    CHECK(b.store.get("api").circuit.generation > g3);
}

TEST_CASE("force pins a circuit until unforced", "[breaker]") {
    Breaker b;
    Peer op{0, 0, 4242};
    auto f = b.store.force("api", State::Open, 0, "db migration", op);
    REQUIRE(f.circuit.forced);
    CHECK(f.circuit.forced->reason == "db migration");
    CHECK(f.circuit.forced->by.pid == 4242);
    CHECK(f.circuit.forced->until == 0);
    CHECK(f.circuit.snapshot.state == State::Open);

    b.clock.advance(60'000); // well past the reset timeout: still pinned
    auto a = b.store.acquire("api");
    CHECK_FALSE(a.allowed);
    CHECK_FALSE(a.transition);

    // Reports are recorded but move nothing.
    auto r = b.store.report("api", Outcome::Success, std::nullopt, {});
    CHECK(r.circuit.snapshot.success_count == 1);
    CHECK(r.circuit.snapshot.state == State::Open);
    CHECK(b.store.transition("api", State::Closed, {}).error == ErrorCode::Forced);

    auto u = b.store.unforce("api");
    REQUIRE(u.transition);
    CHECK(u.transition->cause == TransitionCause::Unforce);
    CHECK_FALSE(u.circuit.forced);
    CHECK(u.circuit.snapshot.state == State::Open); // normal rules resume from here
    auto next = b.store.acquire("api");
    CHECK(next.allowed); // its reset timeout passed long ago: a probe
    CHECK(next.circuit.snapshot.state == State::HalfOpen);
}

TEST_CASE("force closed lets everything through, failures included", "[breaker]") {
    Breaker b;
    b.trip("api");
    b.store.force("api", State::Closed, 0, "", {});
    b.trip("api", 10);
    auto a = b.store.acquire("api");
    CHECK(a.allowed);
    CHECK(a.permit.empty());
    CHECK(a.circuit.snapshot.state == State::Closed);
    CHECK(a.circuit.snapshot.failure_count == 10);
}

TEST_CASE("a pin with a TTL lifts by itself", "[breaker]") {
    Breaker b;
    b.store.force("api", State::Open, 5000, "", {});
    auto a = b.store.acquire("api");
    CHECK_FALSE(a.allowed);
    CHECK(a.retry_after_ms == 5000);
    CHECK(a.circuit.forced->until == kBreakerStart + 5000);
    b.clock.advance(5000);
    b.store.expire_due();
    CHECK(b.events.transitions.back().cause == TransitionCause::ForceExpired);
    CHECK_FALSE(b.store.get("api").circuit.forced);
    CHECK_FALSE(b.store.transition("api", State::Closed, {}).error);
}

TEST_CASE("reset removes the pin and probes but keeps the key's policy", "[breaker]") {
    Breaker b;
    b.store.configure("api", patch(PolicyField::FailureThreshold, 2), {}, false);
    b.store.force("api", State::Open, 0, "", {});
    b.store.reset("api");
    CHECK(b.events.resets == 1);
    CHECK_FALSE(b.store.get("api").circuit.forced);
    b.fail("api");
    CHECK(b.fail("api").circuit.snapshot.state == State::Open);
}

TEST_CASE("circuits are isolated by key", "[breaker]") {
    Breaker b;
    b.trip("a");
    CHECK_FALSE(b.store.acquire("a").allowed);
    CHECK(b.store.acquire("b").allowed);
    CHECK(b.store.get("b").circuit.snapshot.failure_count == 0);
}

TEST_CASE("policies: key beats the longest prefix, which beats the defaults", "[breaker]") {
    Breaker b;
    PolicyConfig config;
    config.defaults[PolicyField::ResetTimeoutMs] = 1000;
    config.rules.push_back({"pay", patch(PolicyField::FailureThreshold, 4)});
    config.rules.push_back({"payments/", patch(PolicyField::FailureThreshold, 3)});
    b.store.set_policy_config(config);

    auto plain = b.store.policy("search").resolved;
    CHECK(plain.policy.failure_threshold() == 5);
    CHECK(plain.policy.reset_timeout_ms() == 1000);
    CHECK(plain.policy.probe_lease_ms() == 1000);
    CHECK(plain.prefix.empty());

    auto pay = b.store.policy("payments/eu").resolved;
    CHECK(pay.policy.failure_threshold() == 3);
    CHECK(pay.prefix == "payments/");
    CHECK(pay.sources[0] == PolicySource::Prefix);
    CHECK(pay.sources[1] == PolicySource::Default);

    b.store.configure("payments/eu", patch(PolicyField::FailureThreshold, 2), {}, false);
    auto own = b.store.policy("payments/eu").resolved;
    CHECK(own.policy.failure_threshold() == 2);
    CHECK(own.sources[0] == PolicySource::Key);

    // The custom threshold applies to reports.
    b.fail("payments/eu");
    CHECK(b.fail("payments/eu").circuit.snapshot.state == State::Open);
    b.trip("payments/us", 2);
    CHECK(b.fail("payments/us").circuit.snapshot.state == State::Open); // 3 from the prefix

    // A null removes one field; clearing removes the override.
    PolicyPatch removed;
    removed[PolicyField::FailureThreshold] = 1;
    auto back = b.store.configure("payments/eu", {}, removed, false).resolved;
    CHECK(back.policy.failure_threshold() == 3);
    b.store.configure("payments/eu", patch(PolicyField::HalfOpenMax, 2), {}, false);
    auto cleared = b.store.configure("payments/eu", {}, {}, true).resolved;
    CHECK(cleared.policy.half_open_max() == 1);
    CHECK(cleared.sources[2] == PolicySource::Default);
}

// --- the wall clock steps: durations do not, shown times do -------------------

TEST_CASE("a step of the wall clock changes no open time", "[breaker][clock]") {
    for (const std::int64_t step : {-3'600'000LL, 3'600'000LL}) {
        Breaker b;
        b.trip("api");
        const auto opened = b.store.get("api").circuit.snapshot;
        b.clock.advance(10'000);
        b.clock.step_wall(step);
        auto r = b.store.acquire("api");
        CHECK_FALSE(r.allowed);
        CHECK(r.retry_after_ms == 20'000);
        // The times shown follow the wall clock at once.
        CHECK(r.circuit.snapshot.last_state_change == opened.last_state_change + step);
        CHECK(r.circuit.snapshot.last_failure_time == opened.last_failure_time + step);
        b.clock.advance(20'000);
        auto probe = b.store.acquire("api");
        CHECK(probe.allowed);
        REQUIRE(probe.transition);
        CHECK(probe.transition->at == kBreakerStart + 30'000 + step);
        REQUIRE(b.events.transitions.size() == 2);
        CHECK(b.events.transitions.back().at == kBreakerStart + 30'000 + step);
    }
}

TEST_CASE("a step of the wall clock ends no lease and no pin", "[breaker][clock]") {
    for (const std::int64_t step : {-3'600'000LL, 3'600'000LL}) {
        Breaker b;
        b.store.configure("api", patch(PolicyField::ProbeLeaseMs, 1000), {}, false);
        b.trip("api");
        b.clock.advance(30'000);
        auto probe = b.store.acquire("api");
        REQUIRE(probe.allowed);
        b.clock.step_wall(step);
        b.clock.advance(999);
        auto r = b.store.report("api", Outcome::Success, probe.circuit.generation, probe.permit);
        CHECK_FALSE(r.error);
        CHECK(r.circuit.snapshot.state == State::Closed);

        auto f = b.store.force("gate", State::Open, 60'000, "", {});
        const std::int64_t until = f.circuit.forced->until;
        CHECK(until == b.clock.now_ms() + b.clock.wall_offset_ms() + 60'000);
        b.clock.step_wall(step);
        b.clock.advance(59'000);
        b.store.expire_due();
        auto pinned = b.store.get("gate").circuit;
        REQUIRE(pinned.forced);
        CHECK(pinned.forced->until == until + step); // the same moment, on the new wall clock
        b.clock.advance(1'000);
        b.store.expire_due();
        CHECK_FALSE(b.store.get("gate").circuit.forced);
    }
}

TEST_CASE("export and import speak the wall clock across a step", "[breaker][clock]") {
    Breaker b;
    b.trip("api");
    b.clock.advance(10'000);
    b.clock.step_wall(-3'600'000);
    const StoredCircuit exported = b.store.stored("api");
    CHECK(exported.circuit->snapshot.last_state_change == kBreakerStart - 3'600'000);

    // Into a daemon whose wall clock never stepped: the same moments.
    ManualClock other_clock{kBreakerStart - 3'600'000 + 10'000};
    MemoryCircuitStore other{other_clock, 100};
    REQUIRE_FALSE(other.restore(exported));
    CHECK(other.acquire("api").retry_after_ms == 20'000);
    // Back into this one: unchanged.
    REQUIRE_FALSE(b.store.restore(exported));
    CHECK(b.store.stored("api") == exported);
    CHECK(b.store.acquire("api").retry_after_ms == 20'000);
}
