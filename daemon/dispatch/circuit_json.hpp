// JSON for what the daemon says about circuits: the circuit fields of replies
// (snapshot, generation, forced), transitions, and watch event lines.
#pragma once

#include "common/reply.hpp"
#include "daemon/breaker/circuit_store.hpp"

#include <string>
#include <string_view>

namespace cbd {

std::string forced_json(const ForcePin& pin);
std::string transition_json(const TransitionRecord& t);
// {"calls":…,"failures":…,"slow":…,"failureRate":…,"slowRate":…}
std::string window_json(const WindowView& w);

// snapshot, generation, (when pinned) forced, (rate rule) window and
// (observe mode, a call enforce would deny) wouldDeny.
ReplyWriter& circuit_fields(ReplyWriter& w, const CircuitView& v);

// One circuit as a list entry: {"key":…,"snapshot":…,"generation":…[,"forced":…]}.
void append_list_entry(std::string& out, std::string_view key, const CircuitView& v);

// One stored circuit as `export` writes it (and `import` reads it): the list
// entry's fields (snapshot and generation absent for a policy-only key) and
// "policy" with the key's own override, when it has one.
void append_stored_circuit(std::string& out, const StoredCircuit& record);

// Event lines, "\n" included.
std::string transition_event_line(std::string_view key, const TransitionRecord& t,
                                  const CircuitView& v);
std::string reset_event_line(std::string_view key, std::int64_t at);
std::string overflow_event_line(std::uint64_t dropped);

} // namespace cbd
