// The backend that keeps circuits in this process (see circuit_backend.hpp):
// MemoryBackend answers every operation at once from a CircuitStore.
// DurableBackend (durable_backend.hpp) builds on it for --sync always.
#pragma once

#include "daemon/dispatch/circuit_backend.hpp"

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

} // namespace cbd
