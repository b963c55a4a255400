// The Prometheus text exposition format (version 0.0.4) of the daemon's
// counters, for `cbctl metrics`, the node_exporter textfile collector, and
// the optional HTTP endpoint.
#pragma once

#include "daemon/breaker/circuit_store.hpp"
#include "daemon/dispatch/stats.hpp"

#include <string>
#include <vector>

namespace cbd {

// Per-circuit series are capped: one scrape of a million keys would hurt the
// scraper more than it helps anyone.
inline constexpr std::size_t kMaxPerCircuitSeries = 10'000;

struct MetricsInput {
    const DaemonStats& stats;
    CircuitCounts circuits;
    std::uint64_t resident_bytes = 0;
    bool circuits_known = true; // false: the backend has no count yet
    // When per-circuit series were asked for: the circuits, and whether
    // there were more than the cap.
    const std::vector<ListEntry>* per_circuit = nullptr;
    bool per_circuit_truncated = false;
};

std::string render_metrics(const MetricsInput& in);

} // namespace cbd
