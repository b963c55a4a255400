// Every reply the dispatcher sends, built here: for circuit operations one
// builder per result type, chosen by the result an operation's OpOutcome
// holds, and the one reply of a reportBatch; then the daemon's own
// operations (ping, watch, stats, metrics) and the refusal of an operation
// the connection's access level does not allow. The JSON of the values they show (circuits,
// transitions) is in circuit_json.hpp, shared with watch events; the reply
// envelope and escaping are in common/reply.hpp.
#pragma once

#include "common/request.hpp"
#include "daemon/dispatch/circuit_backend.hpp"
#include "daemon/dispatch/event_hub.hpp"
#include "daemon/dispatch/stats.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace cbd {

// The reply to `req` given its outcome: the error alone when the operation
// failed as a whole, else what its result's type shows (a circuit's refusal
// included, with the circuit).
void append_outcome_reply(std::string& out, const Request& req, const OpOutcome& outcome);

// How a reportBatch's entries went, for its one reply.
struct BatchSummary {
    struct EntryError {
        std::size_t index;
        ErrorCode code;
        std::string message;
        bool surely_not_applied = false; // "applied": false (OpFailure)
    };
    std::uint64_t applied = 0;
    std::uint64_t stale = 0;
    std::vector<EntryError> errors; // in the order the entries answered

    // Counts entry `index`, which answered `outcome`. Entry errors are not
    // counted in stats.errors, which counts error replies: the batch's reply
    // is ok, and a line of 1000 bad entries must not move an error-rate alert
    // 1000 times.
    void count(std::size_t index, const OpOutcome& outcome);
};

// {"applied":…,"stale":…,"errors":[…]}, the errors by entry index.
void append_batch_reply(std::string& out, std::string_view id_json, BatchSummary& summary);

void append_reset_reply(std::string& out, std::string_view id_json, bool removed);
void append_ping_reply(std::string& out, std::string_view id_json);

// permission_denied: which level `spec`'s operation needs, and which this
// connection (`uid`) has.
void append_permission_denied_reply(std::string& out, std::string_view id_json, const OpSpec& spec,
                                    AccessLevel has, uid_t uid);

// {"watching":"all"}, or the key, the prefix or how many keys it watches.
void append_watch_reply(std::string& out, std::string_view id_json, const WatchFilter& filter);

// The `stats` reply: the daemon's counters, the circuits (null while the
// backend has no count) and each backend section (null when absent).
void append_stats_reply(std::string& out, std::string_view id_json, const DaemonStats& stats,
                        const std::optional<CircuitCounts>& counts, std::int64_t uptime_ms,
                        std::uint64_t resident_bytes);

// The `metrics` reply: the Prometheus text as one string.
void append_metrics_reply(std::string& out, std::string_view id_json, const std::string& text);

} // namespace cbd
