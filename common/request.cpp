// Request parsing: a non-recursive depth guard, then nlohmann's parser, then
// the field checks driven by the op table in protocol.cpp.
#include "common/request.hpp"

#include <nlohmann/json.hpp>

namespace cbd {

bool nesting_exceeds(std::string_view line, int max_depth) {
    int depth = 0;
    bool in_string = false;
    bool escaped = false;
    for (char c : line) {
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
            continue;
        }
        switch (c) {
        case '"':
            in_string = true;
            break;
        case '[':
        case '{':
            if (++depth > max_depth)
                return true;
            break;
        case ']':
        case '}':
            --depth;
            break;
        default:
            break;
        }
    }
    return false;
}

bool is_blank_line(std::string_view line) {
    return line.find_first_not_of(" \t\r") == std::string_view::npos;
}

namespace {

RequestError invalid(std::string message) {
    return RequestError{ErrorCode::InvalidRequest, std::move(message)};
}

// Error text may quote what the client sent; keep it short. The reply encoder
// escapes it, so it cannot break the line.
std::string quote_input(std::string_view text) {
    constexpr std::size_t kMaxQuoted = 64;
    if (text.size() <= kMaxQuoted)
        return "'" + std::string(text) + "'";
    return "'" + std::string(text.substr(0, kMaxQuoted)) + "...'";
}

std::optional<RequestError> read_id(const nlohmann::json& doc, Request& out) {
    auto it = doc.find("id");
    if (it == doc.end())
        return std::nullopt;
    const bool short_string =
        it->is_string() && it->get_ref<const std::string&>().size() <= kMaxIdStringBytes;
    if (!short_string && !it->is_number_integer())
        return invalid("id must be a string of at most 256 bytes or an integer");
    out.id_json = it->dump();
    return std::nullopt;
}

using Json = nlohmann::json;
using FieldResult = std::optional<RequestError>;

FieldResult read_state(const Json& v, std::string_view field, std::optional<State>& out) {
    if (!v.is_string())
        return invalid("field '" + std::string(field) + "' must be a string");
    const auto& name = v.get_ref<const std::string&>();
    out = parse_state(name);
    if (!out)
        return RequestError{ErrorCode::InvalidState, "unknown state " + quote_input(name) +
                                                         " in '" + std::string(field) +
                                                         "'; expected closed, open or half-open"};
    return std::nullopt;
}

FieldResult read_generation(const Json& v, std::string_view field,
                            std::optional<std::uint64_t>& out) {
    if (v.is_number_unsigned())
        out = v.get<std::uint64_t>();
    else if (v.is_number_integer() && v.get<std::int64_t>() >= 0)
        out = static_cast<std::uint64_t>(v.get<std::int64_t>());
    else
        return invalid("field '" + std::string(field) + "' must be a non-negative integer");
    return std::nullopt;
}

FieldResult read_bounded_string(const Json& v, std::string_view field, std::size_t max_bytes,
                                std::string& out) {
    if (!v.is_string())
        return invalid("field '" + std::string(field) + "' must be a string");
    const auto& s = v.get_ref<const std::string&>();
    if (s.size() > max_bytes)
        return invalid("field '" + std::string(field) + "' is longer than " +
                       std::to_string(max_bytes) + " bytes");
    for (unsigned char c : s)
        if (c < 0x20 || c == 0x7f)
            return invalid("field '" + std::string(field) + "' contains a control character");
    out = s;
    return std::nullopt;
}

// Reads one field the op needs. The caller has checked that it is present.
FieldResult read_field(RequestField field, const Json& v, Request& out) {
    switch (field) {
    case kFieldKey: {
        if (!v.is_string())
            return invalid("field 'key' must be a string");
        const auto& key = v.get_ref<const std::string&>();
        if (auto problem = key_problem(key))
            return RequestError{ErrorCode::InvalidKey, std::string(*problem)};
        out.key = key;
        return std::nullopt;
    }
    case kFieldTo:
        return read_state(v, "to", out.to);
    case kFieldExpect:
        return read_state(v, "expect", out.expect);
    case kFieldExpectGeneration:
        return read_generation(v, "expectGeneration", out.expect_generation);
    case kFieldOutcome:
        if (v == "success")
            out.outcome = Outcome::Success;
        else if (v == "failure")
            out.outcome = Outcome::Failure;
        else
            return invalid("field 'outcome' must be \"success\" or \"failure\"");
        return std::nullopt;
    case kFieldGeneration:
        return read_generation(v, "generation", out.generation);
    case kFieldPermit:
        return read_bounded_string(v, "permit", kMaxPermitBytes, out.permit);
    case kFieldState: {
        std::optional<State> s;
        if (auto err = read_state(v, "state", s))
            return err;
        if (*s == State::HalfOpen)
            return RequestError{ErrorCode::InvalidState,
                                "a circuit can be forced open or closed, not half-open"};
        out.state = *s;
        return std::nullopt;
    }
    case kFieldTtlMs:
        if (!v.is_number_integer() || v.get<std::int64_t>() < 1 ||
            v.get<std::int64_t>() > kMaxForceTtlMs)
            return invalid("field 'ttlMs' must be a positive integer of at most " +
                           std::to_string(kMaxForceTtlMs));
        out.ttl_ms = v.get<std::int64_t>();
        return std::nullopt;
    case kFieldReason:
        return read_bounded_string(v, "reason", kMaxReasonBytes, out.reason);
    case kFieldPrefix:
        out.has_prefix = true;
        return read_bounded_string(v, "prefix", kMaxKeyBytes, out.prefix);
    case kFieldAfter:
        return read_bounded_string(v, "after", kMaxKeyBytes, out.after);
    case kFieldLimit:
        if (!v.is_number_integer() || v.get<std::int64_t>() < 1 ||
            v.get<std::int64_t>() > static_cast<std::int64_t>(kMaxListLimit))
            return invalid("field 'limit' must be an integer from 1 to " +
                           std::to_string(kMaxListLimit));
        out.limit = static_cast<std::size_t>(v.get<std::int64_t>());
        return std::nullopt;
    case kFieldStateFilter:
        return read_state(v, "state", out.state_filter);
    case kFieldPerCircuit:
        if (!v.is_boolean())
            return invalid("field 'perCircuit' must be true or false");
        out.per_circuit = v.get<bool>();
        return std::nullopt;
    case kFieldPolicy:
        if (v.is_null()) {
            out.policy_clear = true;
            return std::nullopt;
        }
        if (auto err = parse_policy_patch(v, out.policy, true, &out.policy_removed))
            return invalid(*err);
        return std::nullopt;
    }
    return invalid("unexpected field");
}

// Wire names of the fields, in the order they are checked.
constexpr std::pair<RequestField, std::string_view> kFieldNames[] = {
    {kFieldKey, "key"},
    {kFieldTo, "to"},
    {kFieldExpect, "expect"},
    {kFieldExpectGeneration, "expectGeneration"},
    {kFieldOutcome, "outcome"},
    {kFieldGeneration, "generation"},
    {kFieldPermit, "permit"},
    {kFieldState, "state"},
    {kFieldTtlMs, "ttlMs"},
    {kFieldReason, "reason"},
    {kFieldPolicy, "policy"},
    {kFieldPrefix, "prefix"},
    {kFieldAfter, "after"},
    {kFieldLimit, "limit"},
    {kFieldStateFilter, "state"},
    {kFieldPerCircuit, "perCircuit"},
};

} // namespace

std::optional<RequestError> parse_request(std::string_view line, Request& out) {
    out = Request{};
    if (!line.empty() && line.back() == '\r')
        line.remove_suffix(1);

    if (nesting_exceeds(line, kMaxNestingDepth))
        return invalid("nesting deeper than 16 levels");

    auto doc = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded())
        return RequestError{ErrorCode::ParseError, "request is not valid JSON"};
    if (!doc.is_object())
        return invalid("request must be a JSON object");

    if (auto err = read_id(doc, out))
        return err;

    auto op_it = doc.find("op");
    if (op_it == doc.end())
        return invalid("missing field 'op'");
    if (!op_it->is_string())
        return invalid("field 'op' must be a string");
    const auto& op_name = op_it->get_ref<const std::string&>();
    const OpSpec* spec = find_op(op_name);
    if (spec == nullptr)
        return RequestError{ErrorCode::UnknownOp, "unknown op " + quote_input(op_name)};
    out.op = spec->op;

    for (const auto& [field, name] : kFieldNames) {
        const bool required = (spec->required & field) != 0;
        if (!required && (spec->optional & field) == 0)
            continue; // not this op's field: ignored, like any unknown field
        auto it = doc.find(name);
        if (it == doc.end()) {
            if (required)
                return invalid("missing field '" + std::string(name) + "'");
            continue;
        }
        if (auto err = read_field(field, *it, out))
            return err;
    }
    return std::nullopt;
}

} // namespace cbd
