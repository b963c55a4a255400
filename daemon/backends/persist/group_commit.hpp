// The group commit's bookkeeping (--sync always), without the disk or the
// writer thread: the group of changes gathering while another commits, each
// key's before-image at its group's first change of it, the answers waiting
// for each group, and the undo of a failed commit. Persistence drives it
// with its writer thread; the session fuzzer drives it with commits that
// land or fail when the input says, so both undo through this very class.
#pragma once

#include "daemon/breaker/circuit_store.hpp"
#include "daemon/dispatch/commit_gate.hpp"

#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace cbd {

class GroupCommit {
  public:
    using Waiter = std::function<void(const KeySet* undone)>;

    explicit GroupCommit(CircuitStore& store) : store_(store) {}

    // A key is about to change: the forming group takes its record, before
    // the change, at its first change of the key. False while an undo
    // restores records (those are no changes).
    bool before_change(std::string_view key);
    // Some change is applied in memory and not yet committed.
    bool pending() const { return !forming_.before.empty() || committing_; }
    bool committing() const { return committing_; }
    // The forming group has changes or waiters: a commit has work to do.
    bool forming_has_work() const { return !forming_.before.empty() || !forming_.waiters.empty(); }
    // `done` runs once everything applied so far is committed: with the
    // forming group (it commits after the running one), or, when nothing is
    // forming, with the running one.
    void when_durable(Waiter done);

    // The forming group starts committing; false when a commit is running,
    // or when nothing changed (then the forming group's waiters, who came for
    // reads, are answered at once).
    bool start();
    // The records the running commit must write: its keys as they are now.
    std::vector<StoredCircuit> committing_records() const;
    // The running commit is on disk: its waiters are answered.
    void committed();
    // The running commit failed: restores the before-images of the forming
    // group, then of the failed one (newer first: the forming group's were
    // taken on top of the failed one's), and answers both groups' waiters
    // with the keys undone. Returns how many keys were undone.
    std::size_t failed();
    // At shutdown: both groups' keys (to write as they are), forgetting
    // their waiters, whose sessions are gone.
    KeySet abandon();

  private:
    struct Group {
        std::unordered_map<std::string, StoredCircuit, KeyHash, std::equal_to<>> before;
        std::vector<Waiter> waiters;
    };
    static void answer(std::vector<Waiter>& waiters, const KeySet* undone);

    CircuitStore& store_;
    Group forming_;
    Group committing_group_;
    bool committing_ = false;
    bool undoing_ = false;
};

} // namespace cbd
