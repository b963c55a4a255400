// Encoding of reply lines. Each reply is exactly one complete line, "\n"
// included, appended to an output buffer. The fixed shapes are written
// directly (they are the hot path); anything that carries text from a client
// goes through the JSON library's string escaping, so no input can break the
// framing.
#pragma once

#include "common/protocol.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace cbd {

// Builds one reply object field by field:
//   ReplyWriter(out, id, true).field("removed", true).finish();
// `id_json` is the request's id already serialized (Request::id_json); empty
// means the reply carries no id.
class ReplyWriter {
  public:
    ReplyWriter(std::string& out, std::string_view id_json, bool ok);

    ReplyWriter& field(std::string_view name, bool value);
    ReplyWriter& field(std::string_view name, std::int64_t value);
    ReplyWriter& field(std::string_view name, std::uint64_t value);
    ReplyWriter& string_field(std::string_view name, std::string_view text);
    // `json` must already be valid JSON (an object written by this module).
    ReplyWriter& raw_field(std::string_view name, std::string_view json);
    ReplyWriter& snapshot(const Snapshot& s);
    // `surely_not_applied`: the change was never sent anywhere it could
    // take effect, so the client may simply retry ("applied": false).
    ReplyWriter& error(ErrorCode code, std::string_view message, bool surely_not_applied = false);
    void finish();

  private:
    void name(std::string_view n);
    std::string& out_;
};

void append_error_reply(std::string& out, std::string_view id_json, ErrorCode code,
                        std::string_view message, bool surely_not_applied = false);

// The snapshot object alone: exactly the reference's five fields.
void append_snapshot_json(std::string& out, const Snapshot& snapshot);

// `text` as a JSON string literal; invalid UTF-8 is replaced, never thrown on.
void append_json_string(std::string& out, std::string_view text);
// The same, as a string of its own: `"a\"b"` for a"b.
std::string json_string(std::string_view text);

void append_int(std::string& out, std::int64_t value);
void append_uint(std::string& out, std::uint64_t value);

} // namespace cbd
