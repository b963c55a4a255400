// Prometheus text (see metrics.hpp).
#include "daemon/dispatch/metrics.hpp"

#include <algorithm>
#include <tuple>

#include <chrono>

namespace cbd {

// DaemonStats counts transitions by cause (stats.hpp): its count must cover
// every cause, or counting the last ones would write past the array.
static_assert(kTransitionCauseCount == static_cast<std::size_t>(TransitionCause::Consecutive) + 1,
              "kTransitionCauseCount (daemon/dispatch/stats.hpp) must count every TransitionCause");

namespace {

// Label values escape backslash, double quote and newline.
std::string label_value(std::string_view v) {
    std::string out;
    out.reserve(v.size());
    for (char c : v) {
        if (c == '\\' || c == '"')
            out += '\\';
        if (c == '\n') {
            out += "\\n";
            continue;
        }
        out += c;
    }
    return out;
}

} // namespace

void Exposition::family(std::string_view name, std::string_view type, std::string_view help) {
    text_ += "# HELP ";
    text_ += name;
    text_ += ' ';
    text_ += help;
    text_ += "\n# TYPE ";
    text_ += name;
    text_ += ' ';
    text_ += type;
    text_ += '\n';
}

void Exposition::sample(std::string_view name, std::string_view labels, std::uint64_t value) {
    text_ += name;
    if (!labels.empty()) {
        text_ += '{';
        text_ += labels;
        text_ += '}';
    }
    text_ += ' ';
    text_ += std::to_string(value);
    text_ += '\n';
}

void Exposition::comment(std::string_view text) {
    text_ += "# ";
    text_ += text;
    text_ += '\n';
}

std::string metric_label(std::string_view name, std::string_view value) {
    return std::string(name) + "=\"" + label_value(value) + "\"";
}

std::string render_metrics(const MetricsInput& in) {
    Exposition m;
    const auto& s = in.stats;

    m.family("cbd_build_info", "gauge", "Version and protocol of this cbd.");
    m.sample("cbd_build_info",
             metric_label("version", kVersion) + "," +
                 metric_label("protocol", std::to_string(kProtocolVersion)),
             1);

    const auto uptime = std::chrono::duration_cast<std::chrono::seconds>(
        std::chrono::steady_clock::now() - s.started);
    m.family("cbd_uptime_seconds", "gauge", "Seconds since cbd started.");
    m.sample("cbd_uptime_seconds", "", static_cast<std::uint64_t>(uptime.count()));

    m.family("cbd_requests_total", "counter", "Requests that parsed, by operation.");
    for (std::size_t i = 0; i < kOpCount; ++i)
        m.sample("cbd_requests_total", metric_label("op", op_spec(static_cast<Op>(i)).name),
                 s.requests[i]);

    m.family("cbd_errors_total", "counter", "Error replies, by error code.");
    for (std::size_t i = 0; i < kErrorCodeCount; ++i)
        m.sample("cbd_errors_total",
                 metric_label("code", error_code_name(static_cast<ErrorCode>(i))), s.errors[i]);

    m.family("cbd_transitions_total", "counter",
             "Circuit state changes (and pins lifted), by from, to and cause.");
    for (std::size_t from = 0; from < 3; ++from)
        for (std::size_t to = 0; to < 3; ++to)
            for (std::size_t cause = 0; cause < kTransitionCauseCount; ++cause)
                if (auto n = s.transitions[from][to][cause])
                    m.sample("cbd_transitions_total",
                             metric_label("from", state_name(static_cast<State>(from))) + "," +
                                 metric_label("to", state_name(static_cast<State>(to))) + "," +
                                 metric_label("cause", transition_cause_name(
                                                           static_cast<TransitionCause>(cause))),
                             n);

    // Absent, not zero, while a backend that counts elsewhere has no count.
    if (in.circuits_known) {
        m.family("cbd_circuits", "gauge", "Circuits held, by state.");
        m.sample("cbd_circuits", metric_label("state", "closed"), in.circuits.closed);
        m.sample("cbd_circuits", metric_label("state", "open"), in.circuits.open);
        m.sample("cbd_circuits", metric_label("state", "half-open"), in.circuits.half_open);
        m.family("cbd_circuits_forced", "gauge", "Circuits pinned by force.");
        m.sample("cbd_circuits_forced", "", in.circuits.forced);
    }

    m.family("cbd_connections", "gauge", "Client connections open now.");
    m.sample("cbd_connections", "", s.connections_current);
    m.family("cbd_connections_total", "counter", "Client connections accepted.");
    m.sample("cbd_connections_total", "", s.connections_total);
    m.family("cbd_connections_refused_total", "counter", "Client connections refused.");
    m.sample("cbd_connections_refused_total", "", s.connections_refused);

    m.family("cbd_watchers", "gauge", "Connections watching events.");
    m.sample("cbd_watchers", "", s.watchers);
    m.family("cbd_events_total", "counter", "Event lines queued to watchers.");
    m.sample("cbd_events_total", "", s.events_emitted);
    m.family("cbd_events_dropped_total", "counter",
             "Event lines lost to watchers that fell behind.");
    m.sample("cbd_events_dropped_total", "", s.events_dropped);

    for (const StatsSection* section : {s.storage, s.backend})
        if (section)
            section->write_metrics(m);

    m.family("cbd_resident_memory_bytes", "gauge", "Resident memory of the cbd process.");
    m.sample("cbd_resident_memory_bytes", "", in.resident_bytes);

    if (in.per_circuit) {
        m.family("cbd_circuit_state", "gauge", "1 for the state each circuit is in, else 0.");
        for (const auto& e : *in.per_circuit)
            for (State st : {State::Closed, State::Open, State::HalfOpen})
                m.sample("cbd_circuit_state",
                         metric_label("key", e.key) + "," + metric_label("state", state_name(st)),
                         e.circuit.snapshot.state == st ? 1 : 0);
        m.family("cbd_circuit_failures", "gauge", "failureCount of each circuit.");
        for (const auto& e : *in.per_circuit)
            m.sample("cbd_circuit_failures", metric_label("key", e.key),
                     e.circuit.snapshot.failure_count);
        // Circuits on the rate rule whose window holds calls (memory
        // backend): the window's rates, in percent as replies show them.
        const bool any_window = std::any_of(in.per_circuit->begin(), in.per_circuit->end(),
                                            [](const ListEntry& e) { return e.circuit.window; });
        if (any_window) {
            const std::tuple<std::string_view, std::string_view, std::int64_t WindowView::*>
                rates[] = {
                    {"cbd_circuit_failure_rate", "rate rule: failed calls in the window, percent.",
                     &WindowView::failure_rate},
                    {"cbd_circuit_slow_call_rate", "rate rule: slow calls in the window, percent.",
                     &WindowView::slow_rate}};
            for (const auto& [name, help, member] : rates) {
                m.family(name, "gauge", help);
                for (const auto& e : *in.per_circuit)
                    if (e.circuit.window)
                        m.sample(name, metric_label("key", e.key),
                                 static_cast<std::uint64_t>((*e.circuit.window).*member));
            }
        }
        if (in.per_circuit_truncated)
            m.comment("cbd: per-circuit series stop after " + std::to_string(kMaxPerCircuitSeries) +
                      " circuits");
    }
    return m.take();
}

} // namespace cbd
