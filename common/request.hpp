// Parsing and validation of one request line. All checks that depend only on
// the request (JSON shape, field types, key rules, the op table) live here,
// so the daemon validates in exactly one place and cbctl can pass input
// through unchanged.
#pragma once

#include "common/policy.hpp"
#include "common/protocol.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cbd {

// A force pin as `import` carries it (the shape `export` writes).
struct ImportedPin {
    State state = State::Closed;
    std::int64_t until = 0; // epoch ms; 0 = no TTL
    std::string reason;
    std::uint32_t uid = static_cast<std::uint32_t>(-1);
    std::int32_t pid = 0;

    bool operator==(const ImportedPin&) const = default;
};

struct RequestError {
    ErrorCode code;
    std::string message;

    bool operator==(const RequestError&) const = default;
};

// One entry of a reportBatch: a report's fields, or, when the entry is not a
// valid report, why (a bad entry does not stop the others).
struct BatchReport {
    std::string key;
    Outcome outcome = Outcome::Success;
    std::optional<std::uint64_t> generation;
    std::string permit;
    std::optional<std::int64_t> duration_ms;
    std::optional<RequestError> error;

    bool operator==(const BatchReport&) const = default;
};

// A validated request. Only the fields its op reads (see the op table) are
// filled in; the rest keep their defaults.
struct Request {
    Op op = Op::Ping;
    std::string key;             // empty when the op's key is optional and absent (watch)
    std::optional<State> to;     // transition
    std::optional<State> expect; // transition, conditional
    std::optional<std::uint64_t> expect_generation; // transition, conditional
    Outcome outcome = Outcome::Success;             // report
    std::optional<std::uint64_t> generation;        // report
    std::string permit;                             // report
    std::optional<std::int64_t> duration_ms;        // report: the call's duration
    State state = State::Closed;                    // force: open or closed
    std::int64_t ttl_ms = 0;                        // force; 0 = until unforced
    std::string reason;                             // force
    PolicyPatch policy;                             // configure: fields to set
    PolicyPatch policy_removed;                     // configure: fields given as null
    bool policy_clear = false;                      // configure: "policy": null
    bool has_prefix = false;                        // watch, list
    std::string prefix;                             // watch, list
    std::string after;                              // list
    std::size_t limit = kDefaultListLimit;          // list
    std::optional<State> state_filter;              // list
    bool per_circuit = false;                       // metrics
    std::optional<Snapshot> snapshot;               // import (with generation)
    std::optional<ImportedPin> forced;              // import
    std::vector<BatchReport> reports;               // reportBatch, in order
    std::vector<std::string> watch_keys;            // watch: sorted, no duplicates
    // The request's id, already serialized as JSON (a string or an integer),
    // so it can be echoed byte for byte; empty when the request had none.
    std::string id_json;
    // Not on the wire: the dispatcher clears it for read-level peers, whose
    // `get` of an unknown key answers the default snapshot without creating
    // the circuit (the circuit table belongs to writers).
    bool create_unknown = true;

    bool operator==(const Request&) const = default;
};

// Parses `line` (one line, without its "\n"; a trailing "\r" is ignored).
// On failure returns the error; `out.id_json` is still filled in whenever the
// id itself was valid, so the error reply can echo it.
std::optional<RequestError> parse_request(std::string_view line, Request& out);

// The two paths parse_request() takes, exposed for the fuzzer's check that
// they agree. parse_request_flat() accepts only valid flat requests of the
// hot operations and returns false for anything else (including errors);
// parse_request_dom() accepts everything and writes every error.
bool parse_request_flat(std::string_view line, Request& out);
std::optional<RequestError> parse_request_dom(std::string_view line, Request& out);

// True when `line` nests arrays/objects deeper than `max_depth`, judged by a
// linear scan that never recurses. Run before any JSON parser sees the line.
bool nesting_exceeds(std::string_view line, int max_depth);

// True when the line holds nothing but whitespace (such lines are skipped).
bool is_blank_line(std::string_view line);

} // namespace cbd
