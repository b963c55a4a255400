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
    void advance_generation(std::uint64_t at_least) override {
        last_generation_ = std::max(last_generation_, at_least);
    }

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
