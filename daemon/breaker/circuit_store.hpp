// The store interface: the reference CircuitBreakerStore's operations and the
// breaker policy built on them, each atomic. MemoryCircuitStore implements it
// today; a networked backend (Redis, see docs/ARCHITECTURE.md) implements the
// same operations with the same results, so the dispatcher and the wire never
// learn which one serves them.
#pragma once

#include "common/policy.hpp"
#include "common/protocol.hpp"
#include "daemon/breaker/policy_set.hpp"
#include "daemon/core/peer.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cbd {

// Why a circuit's state (or pin) changed; the wire names are in
// transition_cause_name().
enum class TransitionCause : std::uint8_t {
    Manual,       // a `transition` op
    Threshold,    // failureCount reached failureThreshold in a report
    Timeout,      // open -> half-open in acquire, resetTimeoutMs after opening
    ProbeSuccess, // enough successful probes closed it
    ProbeFailure, // a failed probe re-opened it
    LeaseExpired, // a probe permit was not reported in time: counted as failed
    Force,        // an operator pinned it
    Unforce,      // an operator lifted the pin (state stays)
    ForceExpired, // the pin's TTL ran out (state stays)
    FailureRate,  // rate rule: the window's failure rate reached its threshold
    SlowCallRate, // rate rule: the window's slow-call rate reached its threshold
    Consecutive,  // consecutive rule: failureThreshold failures in a row
};
std::string_view transition_cause_name(TransitionCause cause);

struct TransitionRecord {
    State from;
    State to;
    TransitionCause cause;
    std::int64_t at;
    std::uint64_t generation; // the circuit's generation after the change
};

// An operator's pin (`force`): the circuit stays in `state` until unforced or
// until `until` (epoch ms; 0 = no TTL).
struct ForcePin {
    State state;
    std::int64_t until = 0;
    std::string reason;
    Peer by;
};

// The rate rule's window as replies show it: the calls it holds, and the
// rates as whole percents rounded down (0 while it holds no call).
struct WindowView {
    std::int64_t calls = 0;
    std::int64_t failures = 0;
    std::int64_t slow = 0;
    std::int64_t failure_rate = 0;
    std::int64_t slow_rate = 0;

    bool operator==(const WindowView&) const = default;
};
// The view of a window holding these calls, rates computed (one formula
// for every backend).
inline WindowView window_view(std::int64_t calls, std::int64_t failures, std::int64_t slow) {
    return {calls, failures, slow, calls == 0 ? 0 : failures * 100 / calls,
            calls == 0 ? 0 : slow * 100 / calls};
}

// What snapshot-bearing replies show of a circuit. `window` and
// `would_deny` only ever come with acquire and report answers.
struct CircuitView {
    Snapshot snapshot;
    std::uint64_t generation = 0;
    std::optional<ForcePin> forced;
    std::optional<WindowView> window = std::nullopt; // the circuit's policy uses the rate rule
    bool would_deny = false; // observe mode: acquire allowed what enforce would deny
};

struct StoreResult {
    std::optional<ErrorCode> error;
    CircuitView circuit;                        // also filled for Conflict and Forced
    std::optional<TransitionRecord> transition; // the change this operation made
};

struct AcquireResult {
    std::optional<ErrorCode> error;
    bool allowed = false;
    std::int64_t retry_after_ms = 0; // when denied
    std::string permit;              // when allowed as a half-open probe
    CircuitView circuit;
    std::optional<TransitionRecord> transition;
};

struct ReportResult {
    std::optional<ErrorCode> error;
    bool stale = false; // the report's generation is not the circuit's: nothing changed
    CircuitView circuit;
    std::optional<TransitionRecord> transition;
};

struct ResetResult {
    bool removed = false; // there was a circuit to remove
};

struct PolicyResult {
    std::optional<ErrorCode> error;
    ResolvedPolicy resolved;
    std::string message{}; // InvalidRequest: which field, and why
};

// Preconditions of a conditional transition; unset ones always hold.
struct TransitionCondition {
    std::optional<State> expect;
    std::optional<std::uint64_t> expect_generation;
};

// Most keys one `list` page examines (see ListPage::next): every backend
// cuts pages at the same place.
inline constexpr std::size_t kMaxListScan = 100'000;

// One page of `list`: circuits in key order.
struct ListQuery {
    std::string prefix;         // only keys starting with this
    std::optional<State> state; // only circuits in this state
    std::size_t limit = 1000;
    std::string after; // start after this key (exclusive); empty = from the start
};

struct ListEntry {
    std::string key;
    CircuitView circuit;
};

struct ListPage {
    std::vector<ListEntry> circuits;
    // The key to pass as `after` for the next page; empty when this was the
    // last. A page may hold fewer than `limit` circuits and still have a next
    // one: each page examines a bounded number of keys, so that a filter
    // matching few circuits never stalls the daemon.
    std::string next;
};

// Everything about one key that outlives a restart: its circuit (absent when
// only a policy override is kept, as after `reset`) and its policy override
// (empty when none). Probe permits are not part of it: a half-open circuit
// comes back half-open with no probes in flight. The persistence layer
// writes these, `export` shows them, and `import` and start-up restore them.
struct StoredCircuit {
    std::string key;
    std::optional<CircuitView> circuit;
    PolicyPatch policy;
    // The circuit's trip-rule state (backoff re-opens, consecutive run,
    // rate window) as MemoryCircuitStore encodes it; empty when it has none.
    // The state file keeps it; export and import do not carry it.
    std::string rule{};

    bool empty() const { return !circuit && policy.empty(); }
    bool operator==(const StoredCircuit& o) const {
        return key == o.key && policy == o.policy && rule == o.rule &&
               circuit.has_value() == o.circuit.has_value() &&
               (!circuit ||
                (circuit->snapshot == o.circuit->snapshot &&
                 circuit->generation == o.circuit->generation &&
                 circuit->forced.has_value() == o.circuit->forced.has_value() &&
                 (!circuit->forced || (circuit->forced->state == o.circuit->forced->state &&
                                       circuit->forced->until == o.circuit->forced->until &&
                                       circuit->forced->reason == o.circuit->forced->reason &&
                                       circuit->forced->by.uid == o.circuit->forced->by.uid &&
                                       circuit->forced->by.pid == o.circuit->forced->by.pid))));
    }
};

// One page of `export`: stored circuits in key order, policy-only keys
// included.
struct ExportPage {
    std::vector<StoredCircuit> circuits;
    std::string next; // as ListPage::next
};

struct CircuitCounts {
    std::size_t total = 0;
    std::size_t closed = 0;
    std::size_t open = 0;
    std::size_t half_open = 0;
    std::size_t forced = 0;
};

// Told of every state change and removal, whatever caused it (including
// leases and pins that expire on their own). The daemon logs them; watchers
// will hang off the same hook.
class CircuitObserver {
  public:
    virtual void on_transition(std::string_view key, const TransitionRecord& t,
                               const CircuitView& circuit) = 0;
    virtual void on_reset(std::string_view key, std::int64_t at) = 0;

  protected:
    ~CircuitObserver() = default;
};

// Told, before the fact, of every change to what StoredCircuit holds for a
// key (its circuit, including creation and removal, and its policy
// override), whatever the cause. Persistence tracks dirty keys with it, and in
// durable mode takes the key's before-image so a failed commit can be undone.
class ChangeTracker {
  public:
    virtual void before_change(std::string_view key) = 0;

  protected:
    ~ChangeTracker() = default;
};

class CircuitStore {
  public:
    virtual ~CircuitStore() = default;

    // The reference store. Each creates an unknown key with the default
    // snapshot (closed, 0, 0, 0, now) first, or fails with TooManyCircuits.
    virtual StoreResult get(std::string_view key) = 0;
    // As get, but an unknown key is not created: the default snapshot (at
    // now) with generation 0, which no circuit has. For read-level peers.
    virtual StoreResult peek(std::string_view key) = 0;
    virtual StoreResult record_success(std::string_view key) = 0;
    virtual StoreResult record_failure(std::string_view key) = 0;
    // Fails with Conflict when `condition` does not hold, Forced when pinned.
    virtual StoreResult transition(std::string_view key, State to,
                                   const TransitionCondition& condition) = 0;
    // Removes the circuit (and its pin and permits; not its policy override).
    virtual ResetResult reset(std::string_view key) = 0;

    // The breaker policy.
    virtual AcquireResult acquire(std::string_view key) = 0;
    // `duration_ms`: how long the call took, when the caller says (slow-call
    // accounting).
    virtual ReportResult report(std::string_view key, Outcome outcome,
                                std::optional<std::uint64_t> generation, std::string_view permit,
                                std::optional<std::int64_t> duration_ms = std::nullopt) = 0;
    virtual StoreResult force(std::string_view key, State state, std::int64_t ttl_ms,
                              std::string reason, const Peer& by) = 0;
    virtual StoreResult unforce(std::string_view key) = 0;

    // Policies. `patch` fields are set, `removed` fields cleared; `clear`
    // drops the key's whole override first.
    virtual PolicyResult configure(std::string_view key, const PolicyPatch& patch,
                                   const PolicyPatch& removed, bool clear) = 0;
    virtual PolicyResult policy(std::string_view key) = 0;
    virtual void set_policy_config(PolicyConfig config) = 0;

    // Applies what time alone decides (expired probe leases and pins) for
    // every circuit whose deadline has passed. Returns the next deadline
    // (epoch ms), or 0 when none is pending.
    virtual std::int64_t expire_due() = 0;

    // Circuits in key order, a page at a time.
    virtual ListPage list(const ListQuery& query) = 0;
    virtual CircuitCounts counts() const = 0;

    virtual std::size_t size() const = 0;

    // Persistence, export and import.
    virtual void set_change_tracker(ChangeTracker* tracker) = 0;
    // What a restart must bring back for `key` (empty when nothing).
    virtual StoredCircuit stored(std::string_view key) const = 0;
    // Makes `key` hold exactly `record` (removing the circuit and override
    // when it has none). Generations stay unique: the store's counter moves
    // past the restored one. Fails only with TooManyCircuits.
    virtual std::optional<ErrorCode> restore(const StoredCircuit& record) = 0;
    // Stored circuits in key order after `after` (exclusive), at most `limit`.
    virtual ExportPage export_page(std::string_view prefix, std::string_view after,
                                   std::size_t limit) = 0;
    // The generation counter, persisted so generations are never reused
    // across restarts either.
    virtual std::uint64_t last_generation() const = 0;
    virtual void advance_generation(std::uint64_t at_least) = 0;
};

} // namespace cbd
