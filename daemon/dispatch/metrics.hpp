// The Prometheus text exposition format (version 0.0.4) of the daemon's
// counters, for `cbctl metrics`, the node_exporter textfile collector, and
// the optional HTTP endpoint.
#pragma once

#include "daemon/breaker/circuit_store.hpp"
#include "daemon/dispatch/stats.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace cbd {

// Per-circuit series are capped: one scrape of a million keys would hurt the
// scraper more than it helps anyone.
inline constexpr std::size_t kMaxPerCircuitSeries = 10'000;

// Metric families and their samples, in the text format, in the order
// written. Backends write their own families with it (StatsSection).
class Exposition {
  public:
    // The HELP and TYPE lines that open a family.
    void family(std::string_view name, std::string_view type, std::string_view help);
    // One sample; `labels` as metric_label() writes them, comma-separated.
    void sample(std::string_view name, std::string_view labels, std::uint64_t value);
    void comment(std::string_view text);
    std::string take() { return std::move(text_); }

  private:
    std::string text_;
};

// One label, name="value", the value escaped.
std::string metric_label(std::string_view name, std::string_view value);

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
