// DurableBackend (see durable_backend.hpp).
#include "daemon/backends/memory/durable_backend.hpp"

#include <memory>
#include <utility>

namespace cbd {

void make_undone(OpOutcome& outcome) {
    outcome.fail(ErrorCode::StorageUnavailable,
                 "the state file could not be written, so this change was not "
                 "applied (see the daemon's log and stats)");
}

bool DurableBackend::run(const Request& req, const Peer& peer, OpOutcome& now, Deferral& deferral) {
    apply(req, peer, now);
    // An answer given while a change is uncommitted may report it (or one it
    // saw): it waits for the commit, and becomes an error if that fails and
    // undoes the change to its key.
    if (!gate_.pending())
        return true;
    auto held = std::make_shared<OpOutcome>(std::move(now));
    gate_.when_durable([held, key = req.key, done = deferral.later()](const KeySet* undone) {
        if (undone && undone->find(key) != undone->end())
            make_undone(*held);
        done(*held);
    });
    return false;
}

} // namespace cbd
