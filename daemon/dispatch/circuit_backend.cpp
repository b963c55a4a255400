// OpOutcome and imported_record (see circuit_backend.hpp).
#include "daemon/dispatch/circuit_backend.hpp"

namespace cbd {

void OpOutcome::clear() {
    error.reset();
    error_message.clear();
    circuit = CircuitView{};
    transition.reset();
    stale = false;
    allowed = false;
    retry_after_ms = 0;
    permit.clear();
    removed = false;
    policy = ResolvedPolicy{};
    page.circuits.clear();
    page.next.clear();
    exported.circuits.clear();
    exported.next.clear();
}

StoredCircuit imported_record(const Request& req) {
    StoredCircuit record;
    record.key = req.key;
    if (req.snapshot) {
        CircuitView v{*req.snapshot, *req.generation, std::nullopt};
        if (const auto& pin = req.forced) {
            Peer by;
            by.uid = static_cast<uid_t>(pin->uid);
            by.pid = static_cast<pid_t>(pin->pid);
            v.forced = ForcePin{pin->state, pin->until, pin->reason, by};
        }
        record.circuit = std::move(v);
    }
    record.policy = req.policy;
    return record;
}

} // namespace cbd
