// The in-memory store: one hash map from key to snapshot, owned by the event
// loop's thread (no locks). Semantics are exactly the reference store's.
#pragma once

#include "daemon/circuit_store.hpp"
#include "daemon/clock.hpp"

#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace cbd {

class MemoryCircuitStore final : public CircuitStore {
  public:
    MemoryCircuitStore(const Clock& clock, std::size_t max_circuits);

    StoreResult get(std::string_view key) override;
    StoreResult record_success(std::string_view key) override;
    StoreResult record_failure(std::string_view key) override;
    StoreResult transition(std::string_view key, State to) override;
    bool reset(std::string_view key) override;
    std::size_t size() const override { return circuits_.size(); }

  private:
    // Heterogeneous lookup: a string_view key is hashed once and never copied
    // unless the circuit is new.
    struct KeyHash {
        using is_transparent = void;
        std::size_t operator()(std::string_view k) const noexcept {
            return std::hash<std::string_view>{}(k);
        }
    };
    using Map = std::unordered_map<std::string, Snapshot, KeyHash, std::equal_to<>>;

    // The circuit for `key`, created with the default snapshot when unknown;
    // nullptr when creating it would pass max_circuits.
    Snapshot* find_or_create(std::string_view key);

    const Clock& clock_;
    std::size_t max_circuits_;
    Map circuits_;
};

} // namespace cbd
