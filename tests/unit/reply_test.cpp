// Reply encoding: exact bytes of each reply shape.
#include "common/reply.hpp"
#include "daemon/dispatch/reply_builder.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

using namespace cbd;

TEST_CASE("snapshot reply has the five reference fields in order", "[reply]") {
    std::string out;
    ReplyWriter(out, "7", true)
        .snapshot(Snapshot{State::HalfOpen, 3, 1, 1764201600123, 1764201600000})
        .finish();
    CHECK(out ==
          R"({"id":7,"ok":true,"snapshot":{"state":"half-open","failureCount":3,)"
          R"("successCount":1,"lastFailureTime":1764201600123,"lastStateChange":1764201600000}})"
          "\n");
}

TEST_CASE("replies without an id carry none", "[reply]") {
    std::string out;
    append_reset_reply(out, "", true);
    append_reset_reply(out, R"("a")", false);
    CHECK(out == "{\"ok\":true,\"removed\":true}\n{\"id\":\"a\",\"ok\":true,\"removed\":false}\n");
}

TEST_CASE("ping reply names version and protocol", "[reply]") {
    std::string out;
    append_ping_reply(out, "");
    CHECK(out == "{\"ok\":true,\"version\":\"" + std::string(kVersion) +
                     "\",\"protocol\":" + std::to_string(kProtocolVersion) + "}\n");
}

TEST_CASE("error text from clients cannot break the line", "[reply]") {
    std::string out;
    append_error_reply(out, "1", ErrorCode::UnknownOp, "unknown op 'a\"}\n{\\ \xff'");
    REQUIRE(out.back() == '\n');
    CHECK(out.find('\n') == out.size() - 1);
    auto doc = nlohmann::json::parse(out);
    CHECK(doc["ok"] == false);
    CHECK(doc["id"] == 1);
    CHECK(doc["error"]["code"] == "unknown_op");
}

TEST_CASE("every error code has its wire name", "[reply]") {
    CHECK(error_code_name(ErrorCode::ParseError) == "parse_error");
    CHECK(error_code_name(ErrorCode::InvalidRequest) == "invalid_request");
    CHECK(error_code_name(ErrorCode::UnknownOp) == "unknown_op");
    CHECK(error_code_name(ErrorCode::InvalidKey) == "invalid_key");
    CHECK(error_code_name(ErrorCode::InvalidState) == "invalid_state");
    CHECK(error_code_name(ErrorCode::LineTooLong) == "line_too_long");
    CHECK(error_code_name(ErrorCode::TooManyCircuits) == "too_many_circuits");
    CHECK(error_code_name(ErrorCode::InternalError) == "internal_error");
}
