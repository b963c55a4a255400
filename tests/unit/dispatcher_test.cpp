// The dispatcher: lines in, reply lines out, no sockets.
#include "daemon/dispatcher.hpp"
#include "daemon/memory_store.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

using namespace cbd;
using nlohmann::json;

namespace {

struct Fixture {
    ManualClock clock{1'764'201'600'000};
    MemoryCircuitStore store{clock, 3};
    Dispatcher dispatcher{store};
    Peer peer{};

    json call(std::string_view line) {
        std::string out;
        dispatcher.handle_line(line, peer, out);
        REQUIRE(!out.empty());
        REQUIRE(out.back() == '\n');
        REQUIRE(out.find('\n') == out.size() - 1); // exactly one line
        return json::parse(out);
    }
};

} // namespace

TEST_CASE("each op is routed to its store operation", "[dispatcher]") {
    Fixture f;
    auto r = f.call(R"({"op":"failure","key":"api","id":1})");
    CHECK(r["id"] == 1);
    CHECK(r["ok"] == true);
    CHECK(r["snapshot"]["failureCount"] == 1);
    CHECK(r["snapshot"]["lastFailureTime"] == 1'764'201'600'000);

    f.clock.advance(5);
    r = f.call(R"({"op":"success","key":"api"})");
    CHECK(r["snapshot"]["successCount"] == 1);
    CHECK_FALSE(r.contains("id"));

    r = f.call(R"({"op":"transition","key":"api","to":"open"})");
    CHECK(r["snapshot"]["state"] == "open");
    CHECK(r["snapshot"]["lastStateChange"] == 1'764'201'600'005);

    r = f.call(R"({"op":"get","key":"api"})");
    CHECK(r["snapshot"]["state"] == "open");
    CHECK(r["snapshot"].size() == 5);

    r = f.call(R"({"op":"reset","key":"api","id":"r"})");
    CHECK(r == json::parse(R"({"id":"r","ok":true,"removed":true})"));
    r = f.call(R"({"op":"reset","key":"api"})");
    CHECK(r["removed"] == false);

    r = f.call(R"({"op":"ping"})");
    CHECK(r["protocol"] == kProtocolVersion);
}

TEST_CASE("blank lines get no reply", "[dispatcher]") {
    Fixture f;
    std::string out;
    f.dispatcher.handle_line("", f.peer, out);
    f.dispatcher.handle_line("  \r", f.peer, out);
    CHECK(out.empty());
}

TEST_CASE("errors carry the code and echo a valid id", "[dispatcher]") {
    Fixture f;
    auto r = f.call(R"({"op":"nope","id":"x"})");
    CHECK(r["ok"] == false);
    CHECK(r["id"] == "x");
    CHECK(r["error"]["code"] == "unknown_op");

    r = f.call(R"({"op":"get","id":{"bad":1}})");
    CHECK(r["error"]["code"] == "invalid_request");
    CHECK_FALSE(r.contains("id"));

    r = f.call("not json");
    CHECK(r["error"]["code"] == "parse_error");
}

TEST_CASE("too_many_circuits from the store reaches the wire", "[dispatcher]") {
    Fixture f; // limit 3
    f.call(R"({"op":"get","key":"a"})");
    f.call(R"({"op":"get","key":"b"})");
    f.call(R"({"op":"get","key":"c"})");
    auto r = f.call(R"({"op":"failure","key":"d","id":4})");
    CHECK(r["error"]["code"] == "too_many_circuits");
    CHECK(r["id"] == 4);
    CHECK(f.call(R"({"op":"failure","key":"a"})")["ok"] == true);
}

TEST_CASE("one request's state does not leak into the next", "[dispatcher]") {
    Fixture f;
    f.call(R"({"op":"get","key":"a","id":99})");
    auto r = f.call(R"({"op":"ping"})");
    CHECK_FALSE(r.contains("id"));
}
