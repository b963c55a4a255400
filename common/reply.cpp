// Reply encoding (see reply.hpp).
#include "common/reply.hpp"

#include <charconv>
#include <nlohmann/json.hpp>

namespace cbd {

namespace {

template <typename Int> void append_int(std::string& out, Int value) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
    (void)ec; // 24 bytes hold any 64-bit integer
    out.append(buf, end);
}

void open_reply(std::string& out, std::string_view id_json, bool ok) {
    out += '{';
    if (!id_json.empty()) {
        out += "\"id\":";
        out += id_json;
        out += ',';
    }
    out += ok ? "\"ok\":true" : "\"ok\":false";
}

} // namespace

void append_json_string(std::string& out, std::string_view text) {
    out += nlohmann::json(std::string(text)).dump(-1, ' ', false,
                                                  nlohmann::json::error_handler_t::replace);
}

void append_snapshot_json(std::string& out, const Snapshot& s) {
    out += "{\"state\":\"";
    out += state_name(s.state);
    out += "\",\"failureCount\":";
    append_int(out, s.failure_count);
    out += ",\"successCount\":";
    append_int(out, s.success_count);
    out += ",\"lastFailureTime\":";
    append_int(out, s.last_failure_time);
    out += ",\"lastStateChange\":";
    append_int(out, s.last_state_change);
    out += '}';
}

void append_snapshot_reply(std::string& out, std::string_view id_json, const Snapshot& snapshot) {
    open_reply(out, id_json, true);
    out += ",\"snapshot\":";
    append_snapshot_json(out, snapshot);
    out += "}\n";
}

void append_reset_reply(std::string& out, std::string_view id_json, bool removed) {
    open_reply(out, id_json, true);
    out += removed ? ",\"removed\":true}\n" : ",\"removed\":false}\n";
}

void append_ping_reply(std::string& out, std::string_view id_json) {
    open_reply(out, id_json, true);
    out += ",\"version\":\"";
    out += kVersion;
    out += "\",\"protocol\":";
    append_int(out, kProtocolVersion);
    out += "}\n";
}

void append_error_reply(std::string& out, std::string_view id_json, ErrorCode code,
                        std::string_view message) {
    open_reply(out, id_json, false);
    out += ",\"error\":{\"code\":\"";
    out += error_code_name(code);
    out += "\",\"message\":";
    append_json_string(out, message);
    out += "}}\n";
}

} // namespace cbd
