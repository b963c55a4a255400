// GroupCommit (see group_commit.hpp).
#include "daemon/backends/persist/group_commit.hpp"

#include <utility>

namespace cbd {

bool GroupCommit::before_change(std::string_view key) {
    if (undoing_)
        return false;
    if (forming_.before.find(key) == forming_.before.end())
        forming_.before.emplace(std::string(key), store_.stored(key));
    return true;
}

void GroupCommit::when_durable(Waiter done) {
    if (!forming_.before.empty() || !committing_)
        forming_.waiters.push_back(std::move(done));
    else
        committing_group_.waiters.push_back(std::move(done));
}

void GroupCommit::answer(std::vector<Waiter>& waiters, const KeySet* undone) {
    // Taken out first: a waiter may wait again (its session dispatches on).
    auto answering = std::move(waiters);
    waiters.clear();
    for (auto& w : answering)
        w(undone);
}

bool GroupCommit::start() {
    if (committing_)
        return false;
    if (forming_.before.empty()) {
        answer(forming_.waiters, nullptr);
        return false;
    }
    committing_group_ = std::move(forming_);
    forming_ = Group{};
    committing_ = true;
    return true;
}

std::vector<StoredCircuit> GroupCommit::committing_records() const {
    std::vector<StoredCircuit> records;
    records.reserve(committing_group_.before.size());
    for (const auto& [key, before] : committing_group_.before)
        records.push_back(store_.stored(key));
    return records;
}

void GroupCommit::committed() {
    committing_ = false;
    auto waiters = std::move(committing_group_.waiters);
    committing_group_ = Group{};
    answer(waiters, nullptr);
}

std::size_t GroupCommit::failed() {
    committing_ = false;
    // Nothing is answered as done that a crash could lose.
    KeySet undone;
    undoing_ = true;
    for (Group* g : {&forming_, &committing_group_})
        for (auto& [key, before] : g->before) {
            store_.restore(before);
            undone.insert(key);
        }
    undoing_ = false;
    auto waiters = std::move(committing_group_.waiters);
    for (auto& w : forming_.waiters)
        waiters.push_back(std::move(w));
    committing_group_ = Group{};
    forming_ = Group{};
    answer(waiters, &undone);
    return undone.size();
}

KeySet GroupCommit::abandon() {
    KeySet keys;
    for (Group* g : {&forming_, &committing_group_}) {
        for (const auto& [key, before] : g->before)
            keys.emplace(key);
        *g = Group{};
    }
    committing_ = false;
    return keys;
}

} // namespace cbd
