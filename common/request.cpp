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
    const bool short_string = it->is_string() && it->get_ref<const std::string&>().size() <= kMaxIdStringBytes;
    if (!short_string && !it->is_number_integer())
        return invalid("id must be a string of at most 256 bytes or an integer");
    out.id_json = it->dump();
    return std::nullopt;
}

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

    if (spec->needs_key) {
        auto key_it = doc.find("key");
        if (key_it == doc.end())
            return invalid("missing field 'key'");
        if (!key_it->is_string())
            return invalid("field 'key' must be a string");
        auto& key = key_it->get_ref<std::string&>();
        if (auto problem = key_problem(key))
            return RequestError{ErrorCode::InvalidKey, std::string(*problem)};
        out.key = std::move(key);
    }

    if (spec->needs_to) {
        auto to_it = doc.find("to");
        if (to_it == doc.end())
            return invalid("missing field 'to'");
        if (!to_it->is_string())
            return invalid("field 'to' must be a string");
        const auto& to_name = to_it->get_ref<const std::string&>();
        out.to = parse_state(to_name);
        if (!out.to)
            return RequestError{ErrorCode::InvalidState,
                                "unknown state " + quote_input(to_name) +
                                    "; expected closed, open or half-open"};
    }
    return std::nullopt;
}

} // namespace cbd
