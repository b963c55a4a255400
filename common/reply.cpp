// Reply encoding (see reply.hpp).
#include "common/reply.hpp"

#include <charconv>
#include <nlohmann/json.hpp>

namespace cbd {

namespace {

template <typename Int> void append_integer(std::string& out, Int value) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
    (void)ec; // 24 bytes hold any 64-bit integer
    out.append(buf, end);
}

} // namespace

void append_int(std::string& out, std::int64_t value) {
    append_integer(out, value);
}
void append_uint(std::string& out, std::uint64_t value) {
    append_integer(out, value);
}

void append_json_string(std::string& out, std::string_view text) {
    out += nlohmann::json(std::string(text))
               .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string json_string(std::string_view text) {
    std::string out;
    append_json_string(out, text);
    return out;
}

void append_snapshot_json(std::string& out, const Snapshot& s) {
    out += "{\"state\":\"";
    out += state_name(s.state);
    out += "\",\"failureCount\":";
    append_uint(out, s.failure_count);
    out += ",\"successCount\":";
    append_uint(out, s.success_count);
    out += ",\"lastFailureTime\":";
    append_int(out, s.last_failure_time);
    out += ",\"lastStateChange\":";
    append_int(out, s.last_state_change);
    out += '}';
}

ReplyWriter::ReplyWriter(std::string& out, std::string_view id_json, bool ok) : out_(out) {
    out_ += '{';
    if (!id_json.empty()) {
        out_ += "\"id\":";
        out_ += id_json;
        out_ += ',';
    }
    out_ += ok ? "\"ok\":true" : "\"ok\":false";
}

void ReplyWriter::name(std::string_view n) {
    out_ += ",\"";
    out_ += n; // field names are ours: plain ASCII, nothing to escape
    out_ += "\":";
}

ReplyWriter& ReplyWriter::field(std::string_view n, bool value) {
    name(n);
    out_ += value ? "true" : "false";
    return *this;
}

ReplyWriter& ReplyWriter::field(std::string_view n, std::int64_t value) {
    name(n);
    append_int(out_, value);
    return *this;
}

ReplyWriter& ReplyWriter::field(std::string_view n, std::uint64_t value) {
    name(n);
    append_uint(out_, value);
    return *this;
}

ReplyWriter& ReplyWriter::string_field(std::string_view n, std::string_view text) {
    name(n);
    append_json_string(out_, text);
    return *this;
}

ReplyWriter& ReplyWriter::raw_field(std::string_view n, std::string_view json) {
    name(n);
    out_ += json;
    return *this;
}

ReplyWriter& ReplyWriter::snapshot(const Snapshot& s) {
    name("snapshot");
    append_snapshot_json(out_, s);
    return *this;
}

ReplyWriter& ReplyWriter::error(ErrorCode code, std::string_view message, bool surely_not_applied) {
    name("error");
    out_ += "{\"code\":\"";
    out_ += error_code_name(code);
    out_ += "\",\"message\":";
    append_json_string(out_, message);
    if (surely_not_applied)
        out_ += ",\"applied\":false";
    out_ += '}';
    return *this;
}

void ReplyWriter::finish() {
    out_ += "}\n";
}

void append_error_reply(std::string& out, std::string_view id_json, ErrorCode code,
                        std::string_view message, bool surely_not_applied) {
    ReplyWriter(out, id_json, false).error(code, message, surely_not_applied).finish();
}

} // namespace cbd
