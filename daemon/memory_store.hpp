// The in-memory store: one hash map from key to circuit, owned by the event
// loop's thread (no locks). Store operations follow the reference exactly;
// the breaker policy (acquire/report, permits, pins) is built on top of them
// here, atomically, which is what makes probe limits hold across processes.
#pragma once

#include "daemon/circuit_store.hpp"
#include "daemon/clock.hpp"
#include "daemon/key_index.hpp"

#include <algorithm>
#include <array>
#include <functional>
#include <memory>
#include <queue>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace cbd {

class MemoryCircuitStore final : public CircuitStore {
  public:
    MemoryCircuitStore(const Clock& clock, std::size_t max_circuits,
                       CircuitObserver* observer = nullptr);

    StoreResult get(std::string_view key) override;
    StoreResult peek(std::string_view key) override;
    StoreResult record_success(std::string_view key) override;
    StoreResult record_failure(std::string_view key) override;
    StoreResult transition(std::string_view key, State to,
                           const TransitionCondition& condition) override;
    bool reset(std::string_view key) override;

    AcquireResult acquire(std::string_view key) override;
    ReportResult report(std::string_view key, Outcome outcome,
                        std::optional<std::uint64_t> generation,
                        std::string_view permit) override;
    StoreResult force(std::string_view key, State state, std::int64_t ttl_ms, std::string reason,
                      const Peer& by) override;
    StoreResult unforce(std::string_view key) override;

    PolicyResult configure(std::string_view key, const PolicyPatch& patch,
                           const PolicyPatch& removed, bool clear) override;
    PolicyResult policy(std::string_view key) override;
    void set_policy_config(PolicyConfig config) override;

    std::int64_t expire_due() override;
    ListPage list(const ListQuery& query) override;
    CircuitCounts counts() const override;
    std::size_t size() const override { return circuits_.size(); }

    void set_change_tracker(ChangeTracker* tracker) override { tracker_ = tracker; }
    StoredCircuit stored(std::string_view key) const override;
    std::optional<ErrorCode> restore(const StoredCircuit& record) override;
    ExportPage export_page(std::string_view prefix, std::string_view after,
                           std::size_t limit) override;
    std::uint64_t last_generation() const override { return last_generation_; }
    // Never past kMaxGeneration: a larger `at_least` (which no checked input
    // path lets through) stops the counter there, so generations run out
    // rather than wrap or repeat.
    void advance_generation(std::uint64_t at_least) override {
        last_generation_ = std::max(last_generation_, std::min(at_least, kMaxGeneration));
    }

    // Generations are JSON numbers on the wire: at most 2^53-1, so every
    // client reads the one cbd sent. The counter only ever gets near it by
    // an import or state file that carries a generation close to it (at a
    // million changes a second the counter takes 285 years to get there).
    //
    // When a new generation would be needed past it, nothing is reused and
    // nothing wraps: every operation that may change a circuit (success,
    // failure, transition, acquire, report, force, unforce, and a get that
    // would create one) is refused with BackendError before it changes
    // anything; reads (get of an existing circuit, list, export, stats,
    // policy), reset, configure and import keep working, and
    // pins and leases that run out are no longer applied. Only a fresh
    // store (a new state file) makes circuits change again.
    static constexpr std::uint64_t kMaxGeneration = static_cast<std::uint64_t>(kMaxSafeInteger);
    // The most generations one operation takes: creating the circuit (1) or
    // settling it (a pin that ran out and a probe lease that ran out: 2),
    // then the operation's own change (1).
    static constexpr std::uint64_t kGenerationsPerOperation = 3;
    // True when `n` more generations can be given out.
    bool generations_left(std::uint64_t n) const { return last_generation_ <= kMaxGeneration - n; }

    // Forgets every circuit, pin, probe, key override and the generation
    // counter, silently: the store is as constructed (its limit, policy
    // configuration, observer and tracker stay). For the fuzzer, which runs
    // every input on a store as new without paying for building one. A
    // daemon never calls it: generations are never reused in one history.
    void start_over();

    // Most keys one list page examines (see ListPage::next).
    static constexpr std::size_t kMaxListScan = 100'000;

  private:
    struct Probe {
        std::string permit;
        std::int64_t expires_at;
    };
    // Rarely needed parts of a circuit, kept out of line so that the common
    // circuit (no probes, no pin) stays small.
    struct Extras {
        std::vector<Probe> probes;
        std::optional<ForcePin> pin;
        bool empty() const { return probes.empty() && !pin; }
    };
    struct Circuit {
        Snapshot snapshot;
        std::uint64_t generation = 0;
        std::unique_ptr<Extras> extras;
    };

    struct KeyHash {
        using is_transparent = void;
        std::size_t operator()(std::string_view k) const noexcept {
            return std::hash<std::string_view>{}(k);
        }
    };
    using Map = std::unordered_map<std::string, Circuit, KeyHash, std::equal_to<>>;

    // The circuit for `key`, created with the default snapshot when unknown
    // (nullptr when that would pass max_circuits), with whatever time alone
    // decides already applied.
    Circuit* find_or_create(std::string_view key, std::int64_t now);
    // Expired probe leases count as failed probes; an expired pin lifts.
    void settle(std::string_view key, Circuit& c, std::int64_t now);

    // The reference transition rules, plus a new generation and no probes.
    TransitionRecord apply_transition(std::string_view key, Circuit& c, State to,
                                      TransitionCause cause, std::int64_t now);
    // The pin lifts; the state stays. Still a new generation, and observed.
    TransitionRecord lift_pin(std::string_view key, Circuit& c, TransitionCause cause,
                              std::int64_t now);

    // Every change to what stored() returns goes through here first.
    void will_change(std::string_view key) {
        if (tracker_)
            tracker_->before_change(key);
    }
    // Removes the circuit from the map and every index (no event).
    void erase_circuit(Map::iterator it);

    // Counts stop at kMaxSafeInteger rather than pass what clients can read.
    static void count_one(std::uint64_t& count) {
        if (count < static_cast<std::uint64_t>(kMaxSafeInteger))
            count += 1;
    }
    // The record's numbers are all within what the protocol allows.
    static bool in_range(const StoredCircuit& record);

    std::string new_permit();
    void add_deadline(std::int64_t at, std::string_view key);
    CircuitView view_of(const Circuit& c) const;
    static bool is_pinned(const Circuit& c) { return c.extras && c.extras->pin; }

    const Clock& clock_;
    std::size_t max_circuits_;
    CircuitObserver* observer_;
    ChangeTracker* tracker_ = nullptr;
    PolicySet policies_;
    Map circuits_;
    KeyIndex ordered_keys_;
    // Circuits by state (indexed by State) and pinned, kept as things change
    // so stats never walk the map.
    std::array<std::size_t, 3> by_state_{};
    std::size_t pinned_ = 0;
    // Never reused, even across reset: every circuit takes the next value
    // on creation and on every change.
    std::uint64_t last_generation_ = 0;
    std::mt19937_64 permit_rng_;

    // Deadlines of probe leases and pin TTLs, earliest first. Entries may be
    // outdated (the probe was reported); settle() checks the real state.
    using Deadline = std::pair<std::int64_t, std::string>;
    std::priority_queue<Deadline, std::vector<Deadline>, std::greater<>> deadlines_;
};

} // namespace cbd
