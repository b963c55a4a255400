// Request parsing: a non-recursive depth guard, then nlohmann's parser, then
// the field checks driven by the op table in protocol.cpp.
#include "common/request.hpp"

#include <algorithm>
#include <array>
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

// An integer in min..max (max at most kMaxSafeInteger, what JSON numbers
// hold exactly everywhere), whatever nlohmann stored it as; false otherwise
// (a fraction, a string, out of range). Never converts before comparing, so
// 18446744073709551615 is out of range, not -1.
template <typename Int>
bool read_bounded_int(const Json& v, std::int64_t min, std::int64_t max, Int& out) {
    if (!v.is_number_integer())
        return false;
    std::int64_t value = 0;
    if (v.is_number_unsigned()) {
        const auto u = v.get<std::uint64_t>();
        if (u > static_cast<std::uint64_t>(max))
            return false;
        value = static_cast<std::int64_t>(u);
    } else {
        value = v.get<std::int64_t>();
    }
    if (value < min || value > max)
        return false;
    out = static_cast<Int>(value);
    return true;
}

// The error for a number outside its range, naming the field and the range.
RequestError out_of_range(std::string_view field, std::int64_t min, std::int64_t max) {
    return invalid("field '" + std::string(field) + "' must be an integer from " +
                   std::to_string(min) + " to " + std::to_string(max));
}

FieldResult read_integer_field(const Json& v, std::string_view field, std::int64_t min,
                               std::int64_t max, auto& out) {
    if (!read_bounded_int(v, min, max, out))
        return out_of_range(field, min, max);
    return std::nullopt;
}

// A generation: 0..2^53-1. A larger one is no generation cbd ever gave out,
// and accepting it on import would move the counter past what clients can
// read exactly.
FieldResult read_generation(const Json& v, std::string_view field,
                            std::optional<std::uint64_t>& out) {
    std::uint64_t g = 0;
    if (auto err = read_integer_field(v, field, 0, kMaxSafeInteger, g))
        return err;
    out = g;
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

// Fields of an object, each known and present exactly as `names` says; an
// unknown one is refused so that a misspelt field is not silently dropped.
FieldResult check_object_fields(const Json& v, std::string_view what,
                                std::initializer_list<std::string_view> required,
                                std::initializer_list<std::string_view> optional) {
    if (!v.is_object())
        return invalid("field '" + std::string(what) + "' must be an object");
    for (auto name : required)
        if (!v.contains(name))
            return invalid("field '" + std::string(what) + "' lacks '" + std::string(name) + "'");
    for (auto it = v.begin(); it != v.end(); ++it) {
        const std::string& name = it.key();
        const auto known = [&name](std::initializer_list<std::string_view> names) {
            for (auto n : names)
                if (n == name)
                    return true;
            return false;
        };
        if (!known(required) && !known(optional))
            return invalid("unknown field " + quote_input(name) + " in '" + std::string(what) +
                           "'");
    }
    return std::nullopt;
}

FieldResult read_snapshot(const Json& v, Request& out) {
    if (auto err = check_object_fields(
            v, "snapshot",
            {"state", "failureCount", "successCount", "lastFailureTime", "lastStateChange"}, {}))
        return err;
    Snapshot s;
    std::optional<State> state;
    if (auto err = read_state(v["state"], "snapshot.state", state))
        return err;
    s.state = *state;
    if (auto err = read_integer_field(v["failureCount"], "snapshot.failureCount", 0,
                                      kMaxSafeInteger, s.failure_count))
        return err;
    if (auto err = read_integer_field(v["successCount"], "snapshot.successCount", 0,
                                      kMaxSafeInteger, s.success_count))
        return err;
    if (auto err = read_integer_field(v["lastFailureTime"], "snapshot.lastFailureTime", 0,
                                      kMaxSafeInteger, s.last_failure_time))
        return err;
    if (auto err = read_integer_field(v["lastStateChange"], "snapshot.lastStateChange", 0,
                                      kMaxSafeInteger, s.last_state_change))
        return err;
    out.snapshot = s;
    return std::nullopt;
}

FieldResult read_forced(const Json& v, Request& out) {
    if (auto err = check_object_fields(v, "forced", {"state"}, {"until", "reason", "by"}))
        return err;
    ImportedPin pin;
    std::optional<State> state;
    if (auto err = read_state(v["state"], "forced.state", state))
        return err;
    if (*state == State::HalfOpen)
        return RequestError{ErrorCode::InvalidState,
                            "a circuit can be forced open or closed, not half-open"};
    pin.state = *state;
    if (auto it = v.find("until");
        it != v.end() && !it->is_null() && !read_bounded_int(*it, 1, kMaxSafeInteger, pin.until))
        return invalid("field 'forced.until' must be null or an integer from 1 to " +
                       std::to_string(kMaxSafeInteger));
    if (auto it = v.find("reason"); it != v.end())
        if (auto err = read_bounded_string(*it, "forced.reason", kMaxReasonBytes, pin.reason))
            return err;
    if (auto it = v.find("by"); it != v.end()) {
        if (auto err = check_object_fields(*it, "forced.by", {}, {"uid", "pid"}))
            return err;
        // A uid_t is 32 bits (4294967295 is "nobody set it"); a pid_t is a
        // positive int, 0 when unknown.
        std::int64_t uid = pin.uid, pid = 0;
        if (auto u = it->find("uid"); u != it->end())
            if (auto err = read_integer_field(*u, "forced.by.uid", 0, 0xffffffffLL, uid))
                return err;
        if (auto p = it->find("pid"); p != it->end())
            if (auto err = read_integer_field(*p, "forced.by.pid", 0, 0x7fffffffLL, pid))
                return err;
        pin.uid = static_cast<std::uint32_t>(uid);
        pin.pid = static_cast<std::int32_t>(pid);
    }
    out.forced = pin;
    return std::nullopt;
}

FieldResult read_op_fields(const OpSpec& spec, const Json& doc, Request& out);

// A reportBatch's entries. Only the array's own shape can refuse the line;
// an entry that is not a valid report keeps its error and the rest go on.
FieldResult read_reports(const Json& v, Request& out) {
    if (!v.is_array() || v.empty() || v.size() > kMaxReportBatch)
        return invalid("field 'reports' must be an array of 1 to " +
                       std::to_string(kMaxReportBatch) + " reports");
    out.reports.clear();
    out.reports.reserve(v.size());
    Request entry;
    for (const auto& item : v) {
        BatchReport& report = out.reports.emplace_back();
        if (!item.is_object()) {
            report.error = invalid("a report must be an object");
            continue;
        }
        entry = Request{};
        entry.op = Op::Report;
        if (auto err = read_op_fields(op_spec(Op::Report), item, entry)) {
            report.error = std::move(err);
            continue;
        }
        report.key = std::move(entry.key);
        report.outcome = entry.outcome;
        report.generation = entry.generation;
        report.permit = std::move(entry.permit);
        report.duration_ms = entry.duration_ms;
    }
    return std::nullopt;
}

// A watch's key set, kept sorted and without duplicates so that matching an
// event is a binary search.
FieldResult read_watch_keys(const Json& v, Request& out) {
    if (!v.is_array() || v.empty() || v.size() > kMaxWatchKeys)
        return invalid("field 'keys' must be an array of 1 to " + std::to_string(kMaxWatchKeys) +
                       " keys");
    out.watch_keys.clear();
    out.watch_keys.reserve(v.size());
    for (const auto& item : v) {
        if (!item.is_string())
            return invalid("field 'keys' must hold only strings");
        const auto& key = item.get_ref<const std::string&>();
        if (auto problem = key_problem(key))
            return RequestError{ErrorCode::InvalidKey, "in 'keys': " + std::string(*problem)};
        out.watch_keys.push_back(key);
    }
    std::sort(out.watch_keys.begin(), out.watch_keys.end());
    out.watch_keys.erase(std::unique(out.watch_keys.begin(), out.watch_keys.end()),
                         out.watch_keys.end());
    return std::nullopt;
}

// What only holds between an op's fields.
FieldResult check_combination(const Request& r) {
    if (r.op == Op::Watch &&
        int{!r.key.empty()} + int{r.has_prefix} + int{!r.watch_keys.empty()} > 1)
        return invalid("watch takes one of 'key', 'prefix' or 'keys'");
    if (r.op == Op::Import) {
        if (r.snapshot.has_value() != r.generation.has_value())
            return invalid("'snapshot' and 'generation' go together");
        if (r.forced && !r.snapshot)
            return invalid("'forced' needs a 'snapshot'");
        if (r.forced && r.forced->state != r.snapshot->state)
            return invalid("a forced circuit's snapshot state is the forced state");
        if (!r.snapshot && r.policy.empty())
            return invalid("nothing to import: give a 'snapshot' and 'generation', a 'policy', "
                           "or both");
    }
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
    case kFieldOutcome: {
        const auto outcome =
            v.is_string() ? parse_outcome(v.get_ref<const std::string&>()) : std::nullopt;
        if (!outcome)
            return invalid("field 'outcome' must be \"success\", \"failure\" or \"ignored\"");
        out.outcome = *outcome;
        return std::nullopt;
    }
    case kFieldDurationMs: {
        std::int64_t ms = 0;
        if (auto err = read_integer_field(v, "durationMs", 0, kMaxDurationMs, ms))
            return err;
        out.duration_ms = ms;
        return std::nullopt;
    }
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
        return read_integer_field(v, "ttlMs", 1, kMaxForceTtlMs, out.ttl_ms);
    case kFieldReason:
        return read_bounded_string(v, "reason", kMaxReasonBytes, out.reason);
    case kFieldPrefix:
        out.has_prefix = true;
        return read_bounded_string(v, "prefix", kMaxKeyBytes, out.prefix);
    case kFieldAfter:
        return read_bounded_string(v, "after", kMaxKeyBytes, out.after);
    case kFieldLimit:
        return read_integer_field(v, "limit", 1, static_cast<std::int64_t>(kMaxListLimit),
                                  out.limit);
    case kFieldStateFilter:
        return read_state(v, "state", out.state_filter);
    case kFieldPerCircuit:
        if (!v.is_boolean())
            return invalid("field 'perCircuit' must be true or false");
        out.per_circuit = v.get<bool>();
        return std::nullopt;
    case kFieldSnapshot:
        return read_snapshot(v, out);
    case kFieldForced:
        return read_forced(v, out);
    case kFieldReports:
        return read_reports(v, out);
    case kFieldKeys:
        return read_watch_keys(v, out);
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
    {kFieldDurationMs, "durationMs"},
    {kFieldState, "state"},
    {kFieldTtlMs, "ttlMs"},
    {kFieldReason, "reason"},
    {kFieldPolicy, "policy"},
    {kFieldPrefix, "prefix"},
    {kFieldAfter, "after"},
    {kFieldLimit, "limit"},
    {kFieldStateFilter, "state"},
    {kFieldPerCircuit, "perCircuit"},
    {kFieldSnapshot, "snapshot"},
    {kFieldForced, "forced"},
    {kFieldReports, "reports"},
    {kFieldKeys, "keys"},
};

// The fields `spec` reads, from the object `doc`, each checked once.
FieldResult read_op_fields(const OpSpec& spec, const Json& doc, Request& out) {
    for (const auto& [field, name] : kFieldNames) {
        const bool required = (spec.required & field) != 0;
        if (!required && (spec.optional & field) == 0)
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

} // namespace

std::optional<RequestError> parse_request(std::string_view line, Request& out) {
    if (parse_request_flat(line, out))
        return std::nullopt;
    return parse_request_dom(line, out);
}

std::optional<RequestError> parse_request_dom(std::string_view line, Request& out) {
    out = Request{};
    if (!line.empty() && line.back() == '\r')
        line.remove_suffix(1);

    if (nesting_exceeds(line, kMaxNestingDepth))
        return invalid("nesting deeper than 16 levels");

    // nlohmann's lexer takes a NUL byte for the end of its input, so without
    // this check `{...}\0junk` would parse as the object before the NUL and
    // be applied. No JSON text holds a raw NUL: the line is not JSON.
    if (line.find('\0') != std::string_view::npos)
        return RequestError{ErrorCode::ParseError, "request contains a NUL byte"};

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
    if (auto err = read_op_fields(*spec, doc, out))
        return err;
    return check_combination(out);
}

// --- the flat fast path ------------------------------------------------------
//
// Most requests are one flat object of short ASCII strings and small
// integers: {"op":"failure","key":"api","id":7}. This scanner accepts only
// that shape, only the hot operations' fields, and only requests that are
// valid; anything else (escapes, non-ASCII, nesting, other fields, any error)
// goes to the DOM parser, which alone writes error replies. So the fast path
// can change speed, never answers: the fuzz target checks that both paths
// agree on every request the fast one accepts.
//
// A NUL byte is never accepted here: every byte of an accepted line is
// consumed by a rule that excludes it (strings take only printable ASCII,
// numbers only digits, whitespace only space, tab, CR, LF), and the line
// must be used up to its last byte. So a line with a NUL always goes to the
// DOM path, which answers parse_error.

namespace {

class FlatScanner {
  public:
    explicit FlatScanner(std::string_view text)
        : p_(text.data()), end_(text.data() + text.size()) {}

    void skip_ws() {
        while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\r' || *p_ == '\n'))
            ++p_;
    }
    bool eat(char c) {
        skip_ws();
        if (p_ < end_ && *p_ == c) {
            ++p_;
            return true;
        }
        return false;
    }
    bool at_end() {
        skip_ws();
        return p_ == end_;
    }
    // A string of printable ASCII without escapes; its contents in `out`.
    bool string(std::string_view& out) {
        if (!eat('"'))
            return false;
        const char* start = p_;
        while (p_ < end_ && *p_ != '"') {
            const auto c = static_cast<unsigned char>(*p_);
            if (c < 0x20 || c >= 0x7f || c == '\\')
                return false;
            ++p_;
        }
        if (p_ == end_)
            return false;
        out = std::string_view(start, static_cast<std::size_t>(p_ - start));
        ++p_;
        return true;
    }
    // An integer as JSON writes it canonically, that fits in 18 digits.
    bool integer(std::string_view& text, std::int64_t& value) {
        skip_ws();
        const char* start = p_;
        if (p_ < end_ && *p_ == '-')
            ++p_;
        const char* digits = p_;
        while (p_ < end_ && *p_ >= '0' && *p_ <= '9')
            ++p_;
        const auto n = static_cast<std::size_t>(p_ - digits);
        if (n == 0 || n > 18 || (digits[0] == '0' && (n > 1 || digits != start)))
            return false; // empty, too long, leading zero, or "-0"
        text = std::string_view(start, static_cast<std::size_t>(p_ - start));
        value = 0;
        for (const char* d = digits; d < p_; ++d)
            value = value * 10 + (*d - '0');
        if (digits != start)
            value = -value;
        return true;
    }
    char peek() {
        skip_ws();
        return p_ < end_ ? *p_ : '\0';
    }

  private:
    const char* p_;
    const char* end_;
};

struct FlatValue {
    bool is_string = false;
    std::string_view text; // the string's contents, or the integer as written
    std::int64_t number = 0;
};

} // namespace

bool parse_request_flat(std::string_view line, Request& out) {
    if (!line.empty() && line.back() == '\r')
        line.remove_suffix(1);
    FlatScanner scan(line);
    if (!scan.eat('{'))
        return false;

    // The fields the fast path knows, each at most once.
    enum Slot {
        Op,
        Key,
        Id,
        To,
        Outcome,
        Generation,
        Permit,
        Expect,
        ExpectGeneration,
        DurationMs,
        kSlots
    };
    static constexpr std::string_view kNames[kSlots] = {"op",        "key",     "id",
                                                        "to",        "outcome", "generation",
                                                        "permit",    "expect",  "expectGeneration",
                                                        "durationMs"};
    std::array<std::optional<FlatValue>, kSlots> fields;

    if (!scan.eat('}')) {
        do {
            std::string_view name;
            if (!scan.string(name) || !scan.eat(':'))
                return false;
            int slot = -1;
            for (int i = 0; i < kSlots; ++i)
                if (kNames[i] == name)
                    slot = i;
            if (slot < 0 || fields[static_cast<std::size_t>(slot)])
                return false; // another field, or a duplicate: the DOM decides
            FlatValue v;
            if (scan.peek() == '"') {
                v.is_string = true;
                if (!scan.string(v.text))
                    return false;
            } else if (!scan.integer(v.text, v.number)) {
                return false;
            }
            fields[static_cast<std::size_t>(slot)] = v;
        } while (scan.eat(','));
        if (!scan.eat('}'))
            return false;
    }
    if (!scan.at_end())
        return false;

    const auto& op = fields[Op];
    if (!op || !op->is_string)
        return false;
    const OpSpec* spec = find_op(op->text);
    if (!spec)
        return false;
    switch (spec->op) {
    case Op::Get:
    case Op::Success:
    case Op::Failure:
    case Op::Acquire:
    case Op::Report:
    case Op::Transition:
    case Op::Reset:
    case Op::Ping:
        break;
    default:
        return false; // the DOM path handles the rest
    }
    // Every field given must be one this op reads (others would be ignored
    // by the DOM path; leaving them to it keeps this path simple).
    const std::uint32_t reads = spec->required | spec->optional;
    static constexpr std::uint32_t kBits[kSlots] = {0,
                                                    kFieldKey,
                                                    0,
                                                    kFieldTo,
                                                    kFieldOutcome,
                                                    kFieldGeneration,
                                                    kFieldPermit,
                                                    kFieldExpect,
                                                    kFieldExpectGeneration,
                                                    kFieldDurationMs};
    for (int i = Key; i < kSlots; ++i) {
        if (i == Id)
            continue;
        const bool given = fields[static_cast<std::size_t>(i)].has_value();
        const bool read = (reads & kBits[i]) != 0;
        const bool required = (spec->required & kBits[i]) != 0;
        if ((given && !read) || (required && !given))
            return false;
    }

    out = Request{};
    out.op = spec->op;
    if (const auto& id = fields[Id]) {
        if (id->is_string && id->text.size() > kMaxIdStringBytes)
            return false;
        out.id_json.reserve(id->text.size() + 2);
        if (id->is_string)
            out.id_json.append("\"").append(id->text).append("\"");
        else
            out.id_json.assign(id->text);
    }
    auto state_of = [](const std::optional<FlatValue>& v) -> std::optional<State> {
        return v && v->is_string ? parse_state(v->text) : std::nullopt;
    };
    // As read_generation: 0..2^53-1; anything else is the DOM path's to refuse.
    auto generation_of = [](const FlatValue& v) -> std::optional<std::uint64_t> {
        if (v.is_string || v.number < 0 || v.number > kMaxSafeInteger)
            return std::nullopt;
        return static_cast<std::uint64_t>(v.number);
    };
    if (const auto& key = fields[Key]) {
        if (!key->is_string || key_problem(key->text))
            return false;
        out.key.assign(key->text);
    }
    if (fields[To]) {
        if (!(out.to = state_of(fields[To])))
            return false;
    }
    if (fields[Expect]) {
        if (!(out.expect = state_of(fields[Expect])))
            return false;
    }
    if (const auto& g = fields[ExpectGeneration]) {
        if (!(out.expect_generation = generation_of(*g)))
            return false;
    }
    if (const auto& o = fields[Outcome]) {
        const auto outcome = o->is_string ? parse_outcome(o->text) : std::nullopt;
        if (!outcome)
            return false;
        out.outcome = *outcome;
    }
    if (const auto& d = fields[DurationMs]) {
        if (d->is_string || d->number < 0 || d->number > kMaxDurationMs)
            return false;
        out.duration_ms = d->number;
    }
    if (const auto& g = fields[Generation]) {
        if (!(out.generation = generation_of(*g)))
            return false;
    }
    if (const auto& permit = fields[Permit]) {
        if (!permit->is_string || permit->text.size() > kMaxPermitBytes)
            return false;
        out.permit.assign(permit->text);
    }
    return true;
}

} // namespace cbd
