// The replies to circuit operations, all built here: one builder per result
// type, chosen by the result an operation's OpOutcome holds, and the one
// reply of a reportBatch. The JSON of the values they show (circuits,
// transitions) is in circuit_json.hpp, shared with watch events; the reply
// envelope and escaping are in common/reply.hpp.
#pragma once

#include "common/request.hpp"
#include "daemon/dispatch/circuit_backend.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
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

} // namespace cbd
