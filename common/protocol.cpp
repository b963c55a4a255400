// Names and tables of the wire protocol (see protocol.hpp).
#include "common/protocol.hpp"

#include <array>

namespace cbd {

std::string_view state_name(State s) {
    switch (s) {
    case State::Closed:
        return "closed";
    case State::Open:
        return "open";
    case State::HalfOpen:
        return "half-open";
    }
    return "closed";
}

std::optional<State> parse_state(std::string_view name) {
    if (name == "closed")
        return State::Closed;
    if (name == "open")
        return State::Open;
    if (name == "half-open")
        return State::HalfOpen;
    return std::nullopt;
}

namespace {
// Indexed by Outcome.
constexpr std::array<std::string_view, 3> kOutcomeNames = {"success", "failure", "ignored"};
} // namespace

std::string_view outcome_name(Outcome o) {
    return kOutcomeNames[static_cast<std::size_t>(o)];
}

std::optional<Outcome> parse_outcome(std::string_view name) {
    for (std::size_t i = 0; i < kOutcomeNames.size(); ++i)
        if (kOutcomeNames[i] == name)
            return static_cast<Outcome>(i);
    return std::nullopt;
}

std::string_view error_code_name(ErrorCode code) {
    switch (code) {
    case ErrorCode::ParseError:
        return "parse_error";
    case ErrorCode::InvalidRequest:
        return "invalid_request";
    case ErrorCode::UnknownOp:
        return "unknown_op";
    case ErrorCode::InvalidKey:
        return "invalid_key";
    case ErrorCode::InvalidState:
        return "invalid_state";
    case ErrorCode::LineTooLong:
        return "line_too_long";
    case ErrorCode::TooManyCircuits:
        return "too_many_circuits";
    case ErrorCode::Conflict:
        return "conflict";
    case ErrorCode::Forced:
        return "forced";
    case ErrorCode::NoPermit:
        return "no_permit";
    case ErrorCode::PermissionDenied:
        return "permission_denied";
    case ErrorCode::TooManyConnections:
        return "too_many_connections";
    case ErrorCode::StorageUnavailable:
        return "storage_unavailable";
    case ErrorCode::BackendUnavailable:
        return "backend_unavailable";
    case ErrorCode::InternalError:
        return "internal_error";
    case ErrorCode::BackendError:
        return "backend_error";
    }
    return "internal_error";
}

namespace {

// Indexed by Op: op_spec() relies on the order matching the enum.
constexpr std::array<OpSpec, kOpCount> kOps = {{
    // Reading creates unknown keys (as the reference's getState does), but
    // changes no state: it is read level.
    {Op::Get, "get", kFieldKey, 0, AccessLevel::Read},
    {Op::Success, "success", kFieldKey, 0, AccessLevel::Write},
    {Op::Failure, "failure", kFieldKey, 0, AccessLevel::Write},
    {Op::Transition, "transition", kFieldKey | kFieldTo, kFieldExpect | kFieldExpectGeneration,
     AccessLevel::Admin},
    {Op::Reset, "reset", kFieldKey, 0, AccessLevel::Admin},
    {Op::Ping, "ping", 0, 0, AccessLevel::Read},
    {Op::Acquire, "acquire", kFieldKey, 0, AccessLevel::Write},
    {Op::Report, "report", kFieldKey | kFieldOutcome,
     kFieldGeneration | kFieldPermit | kFieldDurationMs, AccessLevel::Write},
    {Op::Force, "force", kFieldKey | kFieldState, kFieldTtlMs | kFieldReason, AccessLevel::Admin},
    {Op::Unforce, "unforce", kFieldKey, 0, AccessLevel::Admin},
    {Op::Configure, "configure", kFieldKey | kFieldPolicy, 0, AccessLevel::Admin},
    {Op::Policy, "policy", kFieldKey, 0, AccessLevel::Read},
    {Op::Watch, "watch", 0, kFieldKey | kFieldPrefix | kFieldKeys, AccessLevel::Read},
    {Op::List, "list", 0, kFieldPrefix | kFieldStateFilter | kFieldLimit | kFieldAfter,
     AccessLevel::Read},
    {Op::Stats, "stats", 0, 0, AccessLevel::Read},
    {Op::Metrics, "metrics", 0, kFieldPerCircuit, AccessLevel::Read},
    // Export shows what list and policy show; import replaces state whole.
    {Op::Export, "export", 0, kFieldPrefix | kFieldAfter | kFieldLimit, AccessLevel::Read},
    {Op::Import, "import", kFieldKey,
     kFieldSnapshot | kFieldGeneration | kFieldForced | kFieldPolicy, AccessLevel::Admin},
    // Many reports in one line: each entry has exactly a report's fields.
    {Op::ReportBatch, "reportBatch", kFieldReports, 0, AccessLevel::Write},
}};

constexpr bool ops_in_enum_order() {
    for (std::size_t i = 0; i < kOps.size(); ++i)
        if (static_cast<std::size_t>(kOps[i].op) != i)
            return false;
    return true;
}
static_assert(ops_in_enum_order(), "kOps must list the ops in the order of enum Op");

} // namespace

std::string_view access_level_name(AccessLevel level) {
    switch (level) {
    case AccessLevel::Read:
        return "read";
    case AccessLevel::Write:
        return "write";
    case AccessLevel::Admin:
        return "admin";
    }
    return "admin";
}

const OpSpec* find_op(std::string_view name) {
    for (const auto& spec : kOps)
        if (spec.name == name)
            return &spec;
    return nullptr;
}

const OpSpec& op_spec(Op op) {
    return kOps[static_cast<std::size_t>(op)];
}

std::optional<std::string_view> key_problem(std::string_view key) {
    if (key.empty())
        return "key must not be empty";
    if (key.size() > kMaxKeyBytes)
        return "key is longer than 1024 bytes";
    for (unsigned char c : key)
        if (c < 0x20 || c == 0x7f)
            return "key contains a control character";
    return std::nullopt;
}

} // namespace cbd
