// The store interface: the reference CircuitBreakerStore's operations, each
// atomic. MemoryCircuitStore implements it today; a networked backend (Redis,
// see docs/ARCHITECTURE.md) implements the same operations with the same
// results, so the dispatcher and the wire never learn which one serves them.
#pragma once

#include "common/protocol.hpp"

#include <cstddef>
#include <optional>
#include <string_view>

namespace cbd {

// A snapshot, or the reason the operation did nothing.
struct StoreResult {
    std::optional<ErrorCode> error;
    Snapshot snapshot;

    static StoreResult ok(const Snapshot& s) { return {std::nullopt, s}; }
    static StoreResult failed(ErrorCode code) { return {code, {}}; }
};

class CircuitStore {
  public:
    virtual ~CircuitStore() = default;

    // Each of these creates an unknown key with the default snapshot
    // (closed, 0, 0, 0, now) first, or fails with TooManyCircuits.
    virtual StoreResult get(std::string_view key) = 0;
    virtual StoreResult record_success(std::string_view key) = 0;
    virtual StoreResult record_failure(std::string_view key) = 0;
    virtual StoreResult transition(std::string_view key, State to) = 0;

    // Removes the circuit; true when it existed.
    virtual bool reset(std::string_view key) = 0;

    virtual std::size_t size() const = 0;
};

} // namespace cbd
