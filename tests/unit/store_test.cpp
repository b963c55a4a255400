// MemoryCircuitStore against the reference semantics, with a hand-driven clock.
#include "daemon/memory_store.hpp"

#include <catch2/catch.hpp>

using namespace cbd;

namespace {
constexpr std::int64_t kStart = 1'764'201'600'000;
}

TEST_CASE("an unknown key reads as a fresh closed circuit", "[store]") {
    ManualClock clock(kStart);
    MemoryCircuitStore store(clock, 100);
    auto r = store.get("api");
    REQUIRE_FALSE(r.error);
    CHECK(r.circuit.snapshot == Snapshot{State::Closed, 0, 0, 0, kStart});
    CHECK(store.size() == 1);
}

TEST_CASE("get does not change a known circuit", "[store]") {
    ManualClock clock(kStart);
    MemoryCircuitStore store(clock, 100);
    store.record_failure("api");
    clock.advance(500);
    auto r = store.get("api");
    CHECK(r.circuit.snapshot == Snapshot{State::Closed, 1, 0, kStart, kStart});
}

TEST_CASE("two failures count two and stamp the last failure", "[store]") {
    ManualClock clock(kStart);
    MemoryCircuitStore store(clock, 100);
    store.record_failure("api");
    clock.advance(250);
    auto r = store.record_failure("api");
    CHECK(r.circuit.snapshot.failure_count == 2);
    CHECK(r.circuit.snapshot.last_failure_time == kStart + 250);
    CHECK(r.circuit.snapshot.state == State::Closed); // the store never transitions by itself
    CHECK(r.circuit.snapshot.last_state_change == kStart);
}

TEST_CASE("a success counts one and changes nothing else", "[store]") {
    ManualClock clock(kStart);
    MemoryCircuitStore store(clock, 100);
    store.record_failure("api");
    clock.advance(100);
    auto r = store.record_success("api");
    CHECK(r.circuit.snapshot == Snapshot{State::Closed, 1, 1, kStart, kStart});
}

TEST_CASE("success and failure create unknown keys", "[store]") {
    ManualClock clock(kStart);
    MemoryCircuitStore store(clock, 100);
    CHECK(store.record_success("a").circuit.snapshot == Snapshot{State::Closed, 0, 1, 0, kStart});
    CHECK(store.record_failure("b").circuit.snapshot == Snapshot{State::Closed, 1, 0, kStart, kStart});
}

TEST_CASE("transitions follow the reference's counter rules", "[store]") {
    ManualClock clock(kStart);
    MemoryCircuitStore store(clock, 100);
    store.record_failure("api");
    store.record_failure("api");
    store.record_success("api");
    clock.advance(1000);

    SECTION("to open keeps both counts") {
        auto r = store.transition("api", State::Open, {});
        CHECK(r.circuit.snapshot == Snapshot{State::Open, 2, 1, kStart, kStart + 1000});
    }
    SECTION("to half-open zeroes successCount only") {
        auto r = store.transition("api", State::HalfOpen, {});
        CHECK(r.circuit.snapshot == Snapshot{State::HalfOpen, 2, 0, kStart, kStart + 1000});
    }
    SECTION("to closed zeroes both counts") {
        store.transition("api", State::Open, {});
        clock.advance(1);
        auto r = store.transition("api", State::Closed, {});
        CHECK(r.circuit.snapshot == Snapshot{State::Closed, 0, 0, kStart, kStart + 1001});
    }
}

TEST_CASE("a transition to the current state still stamps lastStateChange", "[store]") {
    ManualClock clock(kStart);
    MemoryCircuitStore store(clock, 100);
    store.transition("api", State::Open, {});
    clock.advance(42);
    auto r = store.transition("api", State::Open, {});
    CHECK(r.circuit.snapshot.state == State::Open);
    CHECK(r.circuit.snapshot.last_state_change == kStart + 42);
}

TEST_CASE("transition creates an unknown key", "[store]") {
    ManualClock clock(kStart);
    MemoryCircuitStore store(clock, 100);
    auto r = store.transition("new", State::HalfOpen, {});
    CHECK(r.circuit.snapshot == Snapshot{State::HalfOpen, 0, 0, 0, kStart});
}

TEST_CASE("reset removes the circuit and the next operation starts fresh", "[store]") {
    ManualClock clock(kStart);
    MemoryCircuitStore store(clock, 100);
    store.record_failure("api");
    store.record_success("api");
    store.transition("api", State::Open, {});
    CHECK(store.reset("api"));
    CHECK(store.size() == 0);
    CHECK_FALSE(store.reset("api"));
    clock.advance(10);
    CHECK(store.get("api").circuit.snapshot == Snapshot{State::Closed, 0, 0, 0, kStart + 10});
}

TEST_CASE("circuits are independent", "[store]") {
    ManualClock clock(kStart);
    MemoryCircuitStore store(clock, 100);
    store.record_failure("a");
    store.transition("a", State::Open, {});
    CHECK(store.get("b").circuit.snapshot == Snapshot{State::Closed, 0, 0, 0, kStart});
    store.reset("b");
    CHECK(store.get("a").circuit.snapshot.state == State::Open);
}

TEST_CASE("the circuit limit refuses new keys but serves existing ones", "[store]") {
    ManualClock clock(kStart);
    MemoryCircuitStore store(clock, 2);
    store.get("a");
    store.get("b");
    CHECK(store.get("c").error == ErrorCode::TooManyCircuits);
    CHECK(store.record_failure("c").error == ErrorCode::TooManyCircuits);
    CHECK(store.record_success("c").error == ErrorCode::TooManyCircuits);
    CHECK(store.transition("c", State::Open, {}).error == ErrorCode::TooManyCircuits);
    CHECK(store.size() == 2);
    CHECK_FALSE(store.record_failure("a").error);
    store.reset("a");
    CHECK_FALSE(store.get("c").error);
}
