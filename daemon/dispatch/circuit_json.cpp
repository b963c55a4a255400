// Circuit JSON (see circuit_json.hpp).
#include "daemon/dispatch/circuit_json.hpp"

#include <utility>

namespace cbd {

std::string forced_json(const ForcePin& pin) {
    std::string out = "{\"state\":\"";
    out += state_name(pin.state);
    out += "\",\"until\":";
    if (pin.until != 0)
        append_int(out, pin.until);
    else
        out += "null";
    out += ",\"reason\":";
    append_json_string(out, pin.reason);
    out += ",\"by\":{\"uid\":";
    append_uint(out, pin.by.uid);
    out += ",\"pid\":";
    append_int(out, pin.by.pid);
    out += "}}";
    return out;
}

std::string transition_json(const TransitionRecord& t) {
    std::string out = "{\"from\":\"";
    out += state_name(t.from);
    out += "\",\"to\":\"";
    out += state_name(t.to);
    out += "\",\"cause\":\"";
    out += transition_cause_name(t.cause);
    out += "\"}";
    return out;
}

std::string window_json(const WindowView& w) {
    const std::pair<std::string_view, std::int64_t> fields[] = {{"calls", w.calls},
                                                                {"failures", w.failures},
                                                                {"slow", w.slow},
                                                                {"failureRate", w.failure_rate},
                                                                {"slowRate", w.slow_rate}};
    std::string out = "{";
    for (const auto& [name, value] : fields) {
        if (out.size() > 1)
            out += ',';
        out += '"';
        out += name;
        out += "\":";
        append_int(out, value);
    }
    out += '}';
    return out;
}

ReplyWriter& circuit_fields(ReplyWriter& w, const CircuitView& v) {
    w.snapshot(v.snapshot).field("generation", v.generation);
    if (v.forced)
        w.raw_field("forced", forced_json(*v.forced));
    if (v.window)
        w.raw_field("window", window_json(*v.window));
    if (v.would_deny)
        w.field("wouldDeny", true);
    return w;
}

void append_list_entry(std::string& out, std::string_view key, const CircuitView& v) {
    out += "{\"key\":";
    append_json_string(out, key);
    out += ",\"snapshot\":";
    append_snapshot_json(out, v.snapshot);
    out += ",\"generation\":";
    append_uint(out, v.generation);
    if (v.forced) {
        out += ",\"forced\":";
        out += forced_json(*v.forced);
    }
    out += '}';
}

void append_stored_circuit(std::string& out, const StoredCircuit& record) {
    if (record.circuit) {
        append_list_entry(out, record.key, *record.circuit);
        out.pop_back(); // the closing brace: the policy follows
    } else {
        out += "{\"key\":";
        append_json_string(out, record.key);
    }
    if (!record.policy.empty()) {
        out += ",\"policy\":";
        out += policy_patch_json(record.policy);
    }
    out += '}';
}

std::string transition_event_line(std::string_view key, const TransitionRecord& t,
                                  const CircuitView& v) {
    std::string out = "{\"event\":\"transition\",\"key\":";
    append_json_string(out, key);
    out += ",\"from\":\"";
    out += state_name(t.from);
    out += "\",\"to\":\"";
    out += state_name(t.to);
    out += "\",\"at\":";
    append_int(out, t.at);
    out += ",\"cause\":\"";
    out += transition_cause_name(t.cause);
    out += "\",\"generation\":";
    append_uint(out, t.generation);
    out += ",\"snapshot\":";
    append_snapshot_json(out, v.snapshot);
    if (v.forced) {
        out += ",\"forced\":";
        out += forced_json(*v.forced);
    }
    out += "}\n";
    return out;
}

std::string reset_event_line(std::string_view key, std::int64_t at) {
    std::string out = "{\"event\":\"reset\",\"key\":";
    append_json_string(out, key);
    out += ",\"at\":";
    append_int(out, at);
    out += "}\n";
    return out;
}

std::string overflow_event_line(std::uint64_t dropped) {
    std::string out = "{\"event\":\"overflow\",\"dropped\":";
    append_uint(out, dropped);
    out += "}\n";
    return out;
}

} // namespace cbd
