// Counters for `stats` and the Prometheus metrics. Every part of the daemon
// bumps its own counters here, and a backend in a StatsSection of its own;
// nothing is computed by walking the circuits.
#pragma once

#include "common/protocol.hpp"
#include "daemon/breaker/circuit_store.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace cbd {

inline constexpr std::size_t kTransitionCauseCount = 12;

class Exposition;

// A part of the daemon that describes itself in `stats` and the metrics: a
// backend's fields are its own, so the dispatcher writes them without
// knowing what they are.
class StatsSection {
  public:
    virtual ~StatsSection() = default;
    // Fills `object` (a JSON object) with the section's fields.
    virtual void write_json(nlohmann::json& object) const = 0;
    // Appends the section's metric families.
    virtual void write_metrics(Exposition& metrics) const = 0;
};

// `text` as a JSON string, or null when it is empty (no error yet, nothing
// known yet): the form stats sections give optional text in.
nlohmann::json text_or_null(const std::string& text);

struct DaemonStats {
    std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();

    std::array<std::uint64_t, kOpCount> requests{};      // by Op, requests that parsed
    std::array<std::uint64_t, kErrorCodeCount> errors{}; // by ErrorCode, error replies

    std::uint64_t connections_current = 0;
    std::uint64_t connections_total = 0;
    std::uint64_t connections_refused = 0;

    std::uint64_t watchers = 0;
    std::uint64_t events_emitted = 0; // event lines queued to watchers
    std::uint64_t events_dropped = 0; // lost to overflowing watchers

    // The `storage` and `backend` sections, owned by the backend side; null
    // (and `null` in `stats`, absent from the metrics) when there is none.
    const StatsSection* storage = nullptr; // the state file (--state-file)
    const StatsSection* backend = nullptr; // a backend with a connection (Redis)

    // [from][to][cause]
    std::array<std::array<std::array<std::uint64_t, kTransitionCauseCount>, 3>, 3> transitions{};

    void count_transition(const TransitionRecord& t) {
        transitions[static_cast<std::size_t>(t.from)][static_cast<std::size_t>(t.to)]
                   [static_cast<std::size_t>(t.cause)] += 1;
    }
};

// Resident set size of this process in bytes (from /proc), 0 if unknown.
std::uint64_t resident_memory_bytes();

} // namespace cbd
