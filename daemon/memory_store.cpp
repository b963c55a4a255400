// MemoryCircuitStore: the reference semantics (../shared/reference/SEMANTICS.md).
#include "daemon/memory_store.hpp"

namespace cbd {

MemoryCircuitStore::MemoryCircuitStore(const Clock& clock, std::size_t max_circuits)
    : clock_(clock), max_circuits_(max_circuits) {}

Snapshot* MemoryCircuitStore::find_or_create(std::string_view key) {
    if (auto it = circuits_.find(key); it != circuits_.end())
        return &it->second;
    if (circuits_.size() >= max_circuits_)
        return nullptr;
    Snapshot fresh;
    fresh.last_state_change = clock_.now_ms();
    return &circuits_.emplace(std::string(key), fresh).first->second;
}

StoreResult MemoryCircuitStore::get(std::string_view key) {
    Snapshot* c = find_or_create(key);
    return c ? StoreResult::ok(*c) : StoreResult::failed(ErrorCode::TooManyCircuits);
}

StoreResult MemoryCircuitStore::record_success(std::string_view key) {
    Snapshot* c = find_or_create(key);
    if (!c)
        return StoreResult::failed(ErrorCode::TooManyCircuits);
    c->success_count += 1;
    return StoreResult::ok(*c);
}

StoreResult MemoryCircuitStore::record_failure(std::string_view key) {
    Snapshot* c = find_or_create(key);
    if (!c)
        return StoreResult::failed(ErrorCode::TooManyCircuits);
    c->failure_count += 1;
    c->last_failure_time = clock_.now_ms();
    return StoreResult::ok(*c);
}

StoreResult MemoryCircuitStore::transition(std::string_view key, State to) {
    Snapshot* c = find_or_create(key);
    if (!c)
        return StoreResult::failed(ErrorCode::TooManyCircuits);
    c->state = to;
    c->last_state_change = clock_.now_ms();
    switch (to) {
    case State::Closed:
        c->failure_count = 0;
        c->success_count = 0;
        break;
    case State::HalfOpen:
        c->success_count = 0;
        break;
    case State::Open:
        break; // counts are kept, as the reference does
    }
    return StoreResult::ok(*c);
}

bool MemoryCircuitStore::reset(std::string_view key) {
    auto it = circuits_.find(key);
    if (it == circuits_.end())
        return false;
    circuits_.erase(it);
    return true;
}

} // namespace cbd
