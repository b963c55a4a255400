// The in-memory store: one hash map from key to circuit, owned by the event
// loop's thread (no locks). Store operations follow the reference exactly;
// the breaker policy (acquire/report, permits, pins) is built on top of them
// here, atomically, which is what makes probe limits hold across processes.
#pragma once

#include "daemon/backends/memory/key_index.hpp"
#include "daemon/breaker/circuit_store.hpp"
#include "daemon/core/clock.hpp"

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
    ResetResult reset(std::string_view key) override;

    AcquireResult acquire(std::string_view key) override;
    ReportResult report(std::string_view key, Outcome outcome,
                        std::optional<std::uint64_t> generation, std::string_view permit,
                        std::optional<std::int64_t> duration_ms = std::nullopt) override;
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

    // What the trip rules keep beyond the snapshot: the consecutive rule's
    // run of failures and the rate rule's window. Held only by circuits whose
    // policy uses one of those rules (and only while it holds something), so
    // a circuit on the `count` rule never pays for it.
    class RuleWindow {
      public:
        // Adds one call (the window takes `policy`'s shape first, emptied
        // when that shape changed).
        void add(const Policy& policy, std::int64_t now, bool failed, bool slow);
        // The window as of `now` (a time window's old buckets leave it).
        WindowView totals(const Policy& policy, std::int64_t now) const;
        bool empty() const { return run == 0 && calls_ == 0 && !any_bucket(); }

        std::int64_t run = 0; // consecutive rule: failures in a row

        // A count window's calls, oldest first, one code each (kFailedBit,
        // kSlowBit); a time window's buckets as [index, calls, failures,
        // slow]. For the state file; restore() takes them back.
        std::string encode() const;
        bool decode(std::string_view text);

      private:
        struct Bucket {
            std::int64_t index = -1; // now / bucket length; -1 = unused
            std::int64_t calls = 0;
            std::int64_t failures = 0;
            std::int64_t slow = 0;
        };
        static constexpr std::uint8_t kFailedBit = 1;
        static constexpr std::uint8_t kSlowBit = 2;
        bool any_bucket() const;
        void reshape(const Policy& policy);

        WindowType type_ = WindowType::Count;
        std::int64_t size_ = 0; // the windowSize it was built for; 0 = not yet
        // Count window: a ring of `size_` codes, the next write at `head_`.
        std::vector<std::uint8_t> ring_;
        std::int64_t head_ = 0;
        std::int64_t calls_ = 0, failures_ = 0, slow_ = 0;
        // Time window.
        std::array<Bucket, kTimeWindowBuckets> buckets_{};
    };

  private:
    struct Probe {
        std::string permit;
        std::int64_t expires_at;
    };
    // Rarely needed parts of a circuit, kept out of line so that the common
    // circuit (no probes, no pin, no trip-rule state) stays small.
    struct Extras {
        std::vector<Probe> probes;
        std::optional<ForcePin> pin;
        // Re-opens from half-open in a row (the backoff's doubling count);
        // closing zeroes it.
        std::int64_t reopens = 0;
        std::unique_ptr<RuleWindow> rule;
        bool empty() const { return probes.empty() && !pin && reopens == 0 && !rule; }
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
    // The same, with the wall clock's offset already read (a list page
    // reads it once).
    CircuitView view_of(const Circuit& c, std::int64_t wall_offset) const;
    // An epoch time of cbd's clock as the wall clock has it now (see Clock).
    std::int64_t shown(std::int64_t t) const;
    // Frees what no longer holds anything.
    static void trim(Circuit& c) {
        if (c.extras && c.extras->rule && c.extras->rule->empty())
            c.extras->rule.reset();
        if (c.extras && c.extras->empty())
            c.extras.reset();
    }
    static std::int64_t reopens_of(const Circuit& c) { return c.extras ? c.extras->reopens : 0; }
    // The trip rule's part of a closed circuit's report: records the call
    // and opens the circuit when the rule says so.
    std::optional<TransitionRecord> apply_trip_rule(std::string_view key, Circuit& c,
                                                    const Policy& policy, Outcome outcome,
                                                    bool slow, std::int64_t now);
    // The trip-rule state as StoredCircuit::rule holds it, and back (false,
    // changing nothing, when the text is not such a state).
    static std::string encode_rule(const Circuit& c);
    static bool decode_rule(std::string_view text, Circuit& c);
    // The window a rate-rule circuit shows in acquire and report replies.
    static std::optional<WindowView> window_of(const Circuit& c, const Policy& policy,
                                               std::int64_t now);
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
