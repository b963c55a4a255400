// MemoryCircuitStore against the reference semantics, with a hand-driven clock.
#include "daemon/backends/memory/memory_store.hpp"

#include <catch2/catch.hpp>

using namespace cbd;

namespace {
constexpr std::int64_t kStoreStart = 1'764'201'600'000;
}

TEST_CASE("an unknown key reads as a fresh closed circuit", "[store]") {
    ManualClock clock(kStoreStart);
    MemoryCircuitStore store(clock, 100);
    auto r = store.get("api");
    REQUIRE_FALSE(r.error);
    CHECK(r.circuit.snapshot == Snapshot{State::Closed, 0, 0, 0, kStoreStart});
    CHECK(store.size() == 1);
}

TEST_CASE("get does not change a known circuit", "[store]") {
    ManualClock clock(kStoreStart);
    MemoryCircuitStore store(clock, 100);
    store.record_failure("api");
    clock.advance(500);
    auto r = store.get("api");
    CHECK(r.circuit.snapshot == Snapshot{State::Closed, 1, 0, kStoreStart, kStoreStart});
}

TEST_CASE("two failures count two and stamp the last failure", "[store]") {
    ManualClock clock(kStoreStart);
    MemoryCircuitStore store(clock, 100);
    store.record_failure("api");
    clock.advance(250);
    auto r = store.record_failure("api");
    CHECK(r.circuit.snapshot.failure_count == 2);
    CHECK(r.circuit.snapshot.last_failure_time == kStoreStart + 250);
    CHECK(r.circuit.snapshot.state == State::Closed); // the store never transitions by itself
    CHECK(r.circuit.snapshot.last_state_change == kStoreStart);
}

TEST_CASE("a success counts one and changes nothing else", "[store]") {
    ManualClock clock(kStoreStart);
    MemoryCircuitStore store(clock, 100);
    store.record_failure("api");
    clock.advance(100);
    auto r = store.record_success("api");
    CHECK(r.circuit.snapshot == Snapshot{State::Closed, 1, 1, kStoreStart, kStoreStart});
}

TEST_CASE("success and failure create unknown keys", "[store]") {
    ManualClock clock(kStoreStart);
    MemoryCircuitStore store(clock, 100);
    CHECK(store.record_success("a").circuit.snapshot ==
          Snapshot{State::Closed, 0, 1, 0, kStoreStart});
    CHECK(store.record_failure("b").circuit.snapshot ==
          Snapshot{State::Closed, 1, 0, kStoreStart, kStoreStart});
}

TEST_CASE("transitions follow the reference's counter rules", "[store]") {
    ManualClock clock(kStoreStart);
    MemoryCircuitStore store(clock, 100);
    store.record_failure("api");
    store.record_failure("api");
    store.record_success("api");
    clock.advance(1000);

    SECTION("to open keeps both counts") {
        auto r = store.transition("api", State::Open, {});
        CHECK(r.circuit.snapshot == Snapshot{State::Open, 2, 1, kStoreStart, kStoreStart + 1000});
    }
    SECTION("to half-open zeroes successCount only") {
        auto r = store.transition("api", State::HalfOpen, {});
        CHECK(r.circuit.snapshot ==
              Snapshot{State::HalfOpen, 2, 0, kStoreStart, kStoreStart + 1000});
    }
    SECTION("to closed zeroes both counts") {
        store.transition("api", State::Open, {});
        clock.advance(1);
        auto r = store.transition("api", State::Closed, {});
        CHECK(r.circuit.snapshot == Snapshot{State::Closed, 0, 0, kStoreStart, kStoreStart + 1001});
    }
}

TEST_CASE("a transition to the current state still stamps lastStateChange", "[store]") {
    ManualClock clock(kStoreStart);
    MemoryCircuitStore store(clock, 100);
    store.transition("api", State::Open, {});
    clock.advance(42);
    auto r = store.transition("api", State::Open, {});
    CHECK(r.circuit.snapshot.state == State::Open);
    CHECK(r.circuit.snapshot.last_state_change == kStoreStart + 42);
}

TEST_CASE("transition creates an unknown key", "[store]") {
    ManualClock clock(kStoreStart);
    MemoryCircuitStore store(clock, 100);
    auto r = store.transition("new", State::HalfOpen, {});
    CHECK(r.circuit.snapshot == Snapshot{State::HalfOpen, 0, 0, 0, kStoreStart});
}

TEST_CASE("reset removes the circuit and the next operation starts fresh", "[store]") {
    ManualClock clock(kStoreStart);
    MemoryCircuitStore store(clock, 100);
    store.record_failure("api");
    store.record_success("api");
    store.transition("api", State::Open, {});
    CHECK(store.reset("api").removed);
    CHECK(store.size() == 0);
    CHECK_FALSE(store.reset("api").removed);
    clock.advance(10);
    CHECK(store.get("api").circuit.snapshot == Snapshot{State::Closed, 0, 0, 0, kStoreStart + 10});
}

TEST_CASE("circuits are independent", "[store]") {
    ManualClock clock(kStoreStart);
    MemoryCircuitStore store(clock, 100);
    store.record_failure("a");
    store.transition("a", State::Open, {});
    CHECK(store.get("b").circuit.snapshot == Snapshot{State::Closed, 0, 0, 0, kStoreStart});
    store.reset("b");
    CHECK(store.get("a").circuit.snapshot.state == State::Open);
}

TEST_CASE("the circuit limit refuses new keys but serves existing ones", "[store]") {
    ManualClock clock(kStoreStart);
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

// --- generations and counts stop at 2^53-1 ------------------------------------------

namespace {

constexpr std::uint64_t kMaxGeneration = 9007199254740991ULL; // 2^53-1

StoredCircuit record_at(const std::string& key, std::uint64_t generation) {
    StoredCircuit r;
    r.key = key;
    r.circuit =
        CircuitView{Snapshot{State::Closed, 0, 0, 0, kStoreStart}, generation, std::nullopt};
    return r;
}

} // namespace

TEST_CASE("the generation limit is 2^53-1", "[store]") {
    CHECK(MemoryCircuitStore::kMaxGeneration == kMaxGeneration);
}

TEST_CASE("restore refuses a generation past 2^53-1 and the counter does not move", "[store]") {
    ManualClock clock(kStoreStart);
    MemoryCircuitStore store(clock, 100);
    const auto first = store.get("a").circuit.generation;
    for (std::uint64_t g : {kMaxGeneration + 1, std::uint64_t{1} << 63, ~std::uint64_t{0}}) {
        INFO(g);
        CHECK(store.restore(record_at("huge", g)) == ErrorCode::InvalidRequest);
        CHECK(store.size() == 1);
        CHECK(store.last_generation() == first);
    }
    // The stale-report guard still holds: a new circuit takes a generation
    // no other circuit holds.
    const auto second = store.get("b").circuit.generation;
    CHECK(second == first + 1);
    CHECK(store.report("a", Outcome::Success, second, "").stale);
}

TEST_CASE("restore refuses counts, times and policy values out of range", "[store]") {
    ManualClock clock(kStoreStart);
    MemoryCircuitStore store(clock, 100);
    auto with = [](auto change) {
        StoredCircuit r = record_at("k", 7);
        change(r);
        return r;
    };
    const StoredCircuit bad[] = {
        with([](StoredCircuit& r) { r.circuit->snapshot.failure_count = kMaxGeneration + 1; }),
        with([](StoredCircuit& r) { r.circuit->snapshot.success_count = ~std::uint64_t{0}; }),
        with([](StoredCircuit& r) { r.circuit->snapshot.last_failure_time = -1; }),
        with([](StoredCircuit& r) {
            r.circuit->snapshot.last_state_change = std::int64_t{1} << 53;
        }),
        with([](StoredCircuit& r) {
            r.circuit->forced = ForcePin{State::Closed, std::int64_t{1} << 53, "", Peer{}};
        }),
        with([](StoredCircuit& r) { r.policy[PolicyField::HalfOpenMax] = std::int64_t{1} << 53; }),
    };
    for (const auto& r : bad) {
        CHECK(store.restore(r) == ErrorCode::InvalidRequest);
        CHECK(store.size() == 0);
        CHECK(store.last_generation() == 0);
    }
}

TEST_CASE("advance_generation never moves the counter past 2^53-1", "[store]") {
    ManualClock clock(kStoreStart);
    MemoryCircuitStore store(clock, 100);
    store.advance_generation(~std::uint64_t{0});
    CHECK(store.last_generation() == kMaxGeneration);
    store.advance_generation(5); // never backwards
    CHECK(store.last_generation() == kMaxGeneration);
}

TEST_CASE("when generations run out, changes are refused and nothing is reused", "[store]") {
    ManualClock clock(kStoreStart);
    MemoryCircuitStore store(clock, 100);
    // Room for exactly one more operation.
    const std::uint64_t start = kMaxGeneration - MemoryCircuitStore::kGenerationsPerOperation;
    REQUIRE_FALSE(store.restore(record_at("old", start)));
    auto created = store.get("new");
    REQUIRE_FALSE(created.error);
    CHECK(created.circuit.generation == start + 1);

    // Now every operation that may need a generation is refused before it
    // changes anything, on new and known keys alike.
    const auto before = store.stored("old");
    CHECK(store.get("other").error == ErrorCode::BackendError);
    CHECK(store.record_failure("old").error == ErrorCode::BackendError);
    CHECK(store.record_success("old").error == ErrorCode::BackendError);
    CHECK(store.transition("old", State::Open, {}).error == ErrorCode::BackendError);
    CHECK(store.acquire("old").error == ErrorCode::BackendError);
    CHECK(store.report("old", Outcome::Failure, std::nullopt, "").error == ErrorCode::BackendError);
    CHECK(store.force("old", State::Open, 0, "", Peer{}).error == ErrorCode::BackendError);
    CHECK(store.unforce("old").error == ErrorCode::BackendError);
    CHECK(store.stored("old") == before);
    CHECK(store.size() == 2);
    CHECK(store.last_generation() == start + 1);
    CHECK(store.last_generation() <= kMaxGeneration);

    // Reads, reset and configure still work.
    CHECK(store.list(ListQuery{}).circuits.size() == 2);
    CHECK(store.reset("new").removed);
    CHECK_FALSE(store.configure("old", PolicyPatch{}, PolicyPatch{}, true).error);
}

TEST_CASE("a pin that runs out after the generations did is left in place", "[store]") {
    ManualClock clock(kStoreStart);
    MemoryCircuitStore store(clock, 100);
    StoredCircuit pinned = record_at("p", kMaxGeneration - 1);
    pinned.circuit->snapshot.state = State::Open;
    pinned.circuit->forced = ForcePin{State::Open, kStoreStart + 1000, "", Peer{}};
    REQUIRE_FALSE(store.restore(pinned));
    clock.advance(5000);
    CHECK(store.expire_due() == 0); // the deadline is dropped, not retried forever
    CHECK(store.last_generation() == kMaxGeneration - 1);
    CHECK(store.stored("p") == pinned);
    CHECK(store.list(ListQuery{}).circuits.at(0).circuit.forced.has_value());
}

TEST_CASE("counts stop at 2^53-1", "[store]") {
    ManualClock clock(kStoreStart);
    MemoryCircuitStore store(clock, 100);
    StoredCircuit full = record_at("k", 3);
    full.circuit->snapshot.failure_count = kMaxGeneration;
    full.circuit->snapshot.success_count = kMaxGeneration;
    REQUIRE_FALSE(store.restore(full));
    CHECK(store.record_failure("k").circuit.snapshot.failure_count == kMaxGeneration);
    CHECK(store.record_success("k").circuit.snapshot.success_count == kMaxGeneration);
    // A report that counts, with a policy that never opens the circuit.
    PolicyPatch never;
    never[PolicyField::FailureThreshold] = kMaxSafeInteger;
    REQUIRE_FALSE(store.configure("k", never, PolicyPatch{}, false).error);
    CHECK(store.report("k", Outcome::Failure, std::nullopt, "").circuit.snapshot.failure_count ==
          kMaxGeneration);
}

TEST_CASE("retryAfterMs stays within 2^53-1 when the state change lies in the future", "[store]") {
    ManualClock clock(kStoreStart);
    MemoryCircuitStore store(clock, 100);
    StoredCircuit open = record_at("k", 3);
    open.circuit->snapshot.state = State::Open;
    open.circuit->snapshot.last_state_change = kMaxSafeInteger;
    open.policy[PolicyField::ResetTimeoutMs] = kMaxSafeInteger;
    REQUIRE_FALSE(store.restore(open));
    auto r = store.acquire("k");
    REQUIRE_FALSE(r.error);
    CHECK_FALSE(r.allowed);
    CHECK(r.retry_after_ms == kMaxSafeInteger);
}

TEST_CASE("start_over leaves the store as constructed", "[store]") {
    ManualClock clock(kStoreStart);
    MemoryCircuitStore store(clock, 2);
    store.record_failure("a");
    store.force("b", State::Open, 1000, "why", Peer{});
    PolicyPatch patch;
    patch[PolicyField::HalfOpenMax] = 3;
    REQUIRE_FALSE(store.configure("c", patch, PolicyPatch{}, false).error);
    REQUIRE(store.size() == 2);

    store.start_over();
    CHECK(store.size() == 0);
    CHECK(store.last_generation() == 0);
    CHECK(store.counts().total == 0);
    CHECK(store.counts().forced == 0);
    CHECK(store.list(ListQuery{}).circuits.empty());
    CHECK(store.export_page("", "", 10).circuits.empty());
    CHECK(store.policy("c").resolved.policy.half_open_max() == 1);
    clock.advance(5000);
    CHECK(store.expire_due() == 0); // the pin's deadline went too
    // As new: the first circuit takes generation 1, and the limit counts afresh.
    CHECK(store.get("x").circuit.generation == 1);
    CHECK_FALSE(store.get("y").error);
    CHECK(store.get("z").error == ErrorCode::TooManyCircuits);
}
