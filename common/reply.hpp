// Encoding of reply lines. Each function appends exactly one complete line,
// "\n" included, to `out`. The fixed reply shapes are written directly (they
// are the hot path); anything that carries text from a client goes through
// the JSON library's string escaping, so no input can break the framing.
#pragma once

#include "common/protocol.hpp"

#include <string>
#include <string_view>

namespace cbd {

// `id_json` is the request's id already serialized (see Request::id_json);
// empty means the reply carries no id.
void append_snapshot_reply(std::string& out, std::string_view id_json, const Snapshot& snapshot);
void append_reset_reply(std::string& out, std::string_view id_json, bool removed);
void append_ping_reply(std::string& out, std::string_view id_json);
void append_error_reply(std::string& out, std::string_view id_json, ErrorCode code,
                        std::string_view message);

// The snapshot object alone: exactly the reference's five fields.
void append_snapshot_json(std::string& out, const Snapshot& snapshot);

// `text` as a JSON string literal; invalid UTF-8 is replaced, never thrown on.
void append_json_string(std::string& out, std::string_view text);

} // namespace cbd
