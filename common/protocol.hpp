// The cbd wire protocol: what cbd and cbctl must agree on. docs/PROTOCOL.md is
// the human contract; change the two together.
//
// Protocol version history:
//   1  newline-delimited JSON; get, success, failure, transition, reset, ping.
//   2  the breaker: acquire, report, force, unforce, configure, policy;
//      `generation` (and `forced`) beside every snapshot; conditional
//      transitions (expect, expectGeneration); errors conflict, forced,
//      no_permit.
//   3  watch (event streams), list, stats, metrics.
//   4  access levels (read, write, admin) by peer credentials; errors
//      permission_denied, too_many_connections.
//   5  persistence: export, import; error storage_unavailable; `stats`
//      gains "storage".
//   6  the Redis backend: error backend_unavailable; `stats` gains
//      "backend".
//   7  one request path: error backend_error (the backend answered, but with
//      an error that is not an outage: a value of the wrong type or out of
//      range); a NUL anywhere in a line is parse_error; generations, counts
//      and times are at most 2^53-1 everywhere; replies past a per-connection
//      output bound wait for the client to read.
//   8  trip rules: policy fields tripRule, windowType, windowSize,
//      minimumCalls, failureRateThreshold, slowCallDurationMs,
//      slowCallRateThreshold, resetTimeoutMaxMs, mode; report takes
//      durationMs and outcome "ignored"; acquire and report replies carry
//      `window` (rate rule) and `wouldDeny` (observe mode); causes
//      failure-rate, slow-call-rate, consecutive.
//   9  mirrors: reportBatch (many reports in one line, one reply with
//      counts and per-entry errors); watch takes `keys`, a set of keys.
//      Redis Sentinel: stats.backend gains master, sentinel, failovers,
//      minReplicas, replicationFailures, policyDigest, policyMismatch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace cbd {

inline constexpr int kProtocolVersion = 10;
inline constexpr std::string_view kVersion = CBD_VERSION;

// Hard limits. The line and circuit limits have daemon flags; the rest are
// part of the contract and fixed.
inline constexpr std::size_t kDefaultMaxLineBytes = 64 * 1024;
inline constexpr std::size_t kDefaultMaxCircuits = 1'000'000;
inline constexpr std::size_t kMaxKeyBytes = 1024;
inline constexpr std::size_t kMaxIdStringBytes = 256;
inline constexpr int kMaxNestingDepth = 16;
inline constexpr std::size_t kMaxPermitBytes = 64;
inline constexpr std::size_t kMaxReasonBytes = 256;
inline constexpr std::size_t kDefaultListLimit = 1000;
inline constexpr std::size_t kMaxListLimit = 10'000;
inline constexpr std::size_t kDefaultWatchQueue = 10'000;
// Entries of one reportBatch: a batch is one reply, but each entry is a
// backend operation, so a batch weighs its entries against the
// connection's bound on operations waiting for the backend.
inline constexpr std::size_t kMaxReportBatch = 1000;
// Keys of one `watch` with a key set.
inline constexpr std::size_t kMaxWatchKeys = 1000;
// The largest integer that every JSON reader holds exactly (2^53-1, what
// JavaScript calls Number.MAX_SAFE_INTEGER). Generations, counts, times and
// policy values are never above it, on any way in (the protocol, import, the
// state file, values read from Redis), so a client never reads a number
// other than the one cbd sent.
inline constexpr std::int64_t kMaxSafeInteger = (std::int64_t{1} << 53) - 1;
// A force pin's TTL: at most a year.
inline constexpr std::int64_t kMaxForceTtlMs = 366LL * 24 * 3600 * 1000;

enum class State : std::uint8_t { Closed, Open, HalfOpen };

// What a caller reports of a call the breaker let through. Ignored: the call
// neither failed nor succeeded (cancelled, a client error); it hands back its
// permit and counts nowhere.
enum class Outcome : std::uint8_t { Success, Failure, Ignored };
std::string_view outcome_name(Outcome o);
std::optional<Outcome> parse_outcome(std::string_view name);

// A report's durationMs: at most a day (a call that took longer is slow
// under any slowCallDurationMs worth setting).
inline constexpr std::int64_t kMaxDurationMs = 86'400'000;

std::string_view state_name(State s);
std::optional<State> parse_state(std::string_view name);

// The reference store's snapshot, field for field.
struct Snapshot {
    State state = State::Closed;
    std::uint64_t failure_count = 0;
    std::uint64_t success_count = 0;
    std::int64_t last_failure_time = 0; // epoch ms, 0 if none
    std::int64_t last_state_change = 0; // epoch ms

    bool operator==(const Snapshot&) const = default;
};

// Error codes as they appear on the wire.
enum class ErrorCode : std::uint8_t {
    ParseError,
    InvalidRequest,
    UnknownOp,
    InvalidKey,
    InvalidState,
    LineTooLong,
    TooManyCircuits,
    Conflict, // a conditional transition's expectation did not hold
    Forced,   // the circuit is pinned by `force`
    NoPermit, // a half-open report without a valid probe permit
    PermissionDenied,
    TooManyConnections,
    StorageUnavailable, // durable mode: the change could not be committed, so it was undone
    BackendUnavailable, // --backend redis: Redis did not answer in time
    InternalError,
    BackendError, // the backend answered with an error that is not an outage (bad data)
};
inline constexpr std::size_t kErrorCodeCount = 16;
static_assert(static_cast<std::size_t>(ErrorCode::BackendError) + 1 == kErrorCodeCount);

std::string_view error_code_name(ErrorCode code);

// Request fields, as bits, so the op table can say which ones an op needs.
enum RequestField : std::uint32_t {
    kFieldKey = 1u << 0,
    kFieldTo = 1u << 1,
    kFieldExpect = 1u << 2,
    kFieldExpectGeneration = 1u << 3,
    kFieldOutcome = 1u << 4,
    kFieldGeneration = 1u << 5,
    kFieldPermit = 1u << 6,
    kFieldState = 1u << 7,
    kFieldTtlMs = 1u << 8,
    kFieldReason = 1u << 9,
    kFieldPolicy = 1u << 10,
    kFieldPrefix = 1u << 11,
    kFieldAfter = 1u << 12,
    kFieldLimit = 1u << 13,
    kFieldStateFilter = 1u << 14, // "state" as a filter: any of the three
    kFieldPerCircuit = 1u << 15,
    kFieldSnapshot = 1u << 16,   // import
    kFieldForced = 1u << 17,     // import
    kFieldDurationMs = 1u << 18, // report
    kFieldReports = 1u << 19,    // reportBatch
    kFieldKeys = 1u << 20,       // watch: a key set
};

// The operations, and what each needs from a request. Validation of those
// fields happens once, in parse_request(), from this table.
enum class Op : std::uint8_t {
    Get,
    Success,
    Failure,
    Transition,
    Reset,
    Ping,
    Acquire,
    Report,
    Force,
    Unforce,
    Configure,
    Policy,
    Watch,
    List,
    Stats,
    Metrics,
    Export,
    Import,
    ReportBatch,
};
inline constexpr std::size_t kOpCount = 19;

// Who may run an op, in the manner of HAProxy's stats socket levels. Each
// level includes the ones below it.
enum class AccessLevel : std::uint8_t { Read, Write, Admin };
std::string_view access_level_name(AccessLevel level);

struct OpSpec {
    Op op;
    std::string_view name;
    std::uint32_t required; // RequestField bits that must be present
    std::uint32_t optional; // RequestField bits read when present
    AccessLevel level;      // the least level that may run it
};

const OpSpec* find_op(std::string_view name);
const OpSpec& op_spec(Op op);

// A key is valid when it is 1..kMaxKeyBytes bytes with no control character
// (U+0000-U+001F, U+007F). Returns the reason when it is not.
std::optional<std::string_view> key_problem(std::string_view key);

} // namespace cbd
