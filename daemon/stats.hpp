// Counters for `stats` and the Prometheus metrics. Every part of the daemon
// bumps its own counters here; nothing is computed by walking the circuits.
#pragma once

#include "common/protocol.hpp"
#include "daemon/circuit_store.hpp"

#include <array>
#include <chrono>
#include <cstdint>

namespace cbd {

inline constexpr std::size_t kTransitionCauseCount = 9;

struct DaemonStats {
    std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();

    std::array<std::uint64_t, kOpCount> requests{};       // by Op, requests that parsed
    std::array<std::uint64_t, kErrorCodeCount> errors{};  // by ErrorCode, error replies

    std::uint64_t connections_current = 0;
    std::uint64_t connections_total = 0;
    std::uint64_t connections_refused = 0;

    std::uint64_t watchers = 0;
    std::uint64_t events_emitted = 0; // event lines queued to watchers
    std::uint64_t events_dropped = 0; // lost to overflowing watchers

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
