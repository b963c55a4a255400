// DurableBackend (--sync always): a MemoryBackend that holds each answer
// given while a change is not yet committed until the group commit lands,
// and turns the answers about changes a failed commit undid into
// storage_unavailable, so no client hears of a change a crash could lose.
#pragma once

#include "daemon/backends/memory/memory_backend.hpp"
#include "daemon/dispatch/commit_gate.hpp"

namespace cbd {

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
