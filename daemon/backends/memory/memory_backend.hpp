// The backends that keep circuits in this process (see circuit_backend.hpp):
// MemoryBackend answers every operation at once from a CircuitStore;
// DurableBackend (--sync always) does the same but holds each answer given
// while a change is not yet committed until the group commit lands, and
// turns the answers about changes a failed commit undid into
// storage_unavailable, so no client hears of a change a crash could lose.
#pragma once

#include "daemon/dispatch/circuit_backend.hpp"
#include "daemon/dispatch/commit_gate.hpp"

namespace cbd {

class MemoryBackend : public CircuitBackend {
  public:
    explicit MemoryBackend(CircuitStore& store) : store_(store) {}

    bool run(const Request& req, const Peer& peer, OpOutcome& now, Deferral& deferral) override;
    std::optional<CircuitCounts> counts() const override { return store_.counts(); }
    bool list_now(const ListQuery& query, ListPage& page) override;
    void set_policy_config(PolicyConfig config) override;
    void tick() override { store_.expire_due(); }

  protected:
    // Applies `req` to the store (always at once).
    void apply(const Request& req, const Peer& peer, OpOutcome& now);

  private:
    void apply_to_store(const Request& req, const Peer& peer, OpOutcome& now);

    CircuitStore& store_;
};

class DurableBackend final : public MemoryBackend {
  public:
    DurableBackend(CircuitStore& store, CommitGate& gate) : MemoryBackend(store), gate_(gate) {}

    bool run(const Request& req, const Peer& peer, OpOutcome& now, Deferral& deferral) override;

  private:
    CommitGate& gate_;
};

// What the reply to an operation about `key` becomes when the commit that
// held it failed and undid the change (or a change it saw).
void make_undone(OpOutcome& outcome);

} // namespace cbd
