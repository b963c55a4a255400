// The dispatcher: lines in, reply lines out, no sockets.
#include "daemon/dispatcher.hpp"
#include "daemon/log.hpp"
#include "daemon/memory_store.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

using namespace cbd;
using nlohmann::json;

namespace {

struct Fixture {
    Fixture() { log_init(LogLevel::Error); } // no audit lines in test output
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

TEST_CASE("snapshot replies carry the generation beside the snapshot", "[dispatcher]") {
    Fixture f;
    auto r = f.call(R"({"op":"get","key":"g"})");
    CHECK(r["generation"].is_number_unsigned());
    CHECK(r["snapshot"].size() == 5);
    CHECK_FALSE(r.contains("forced"));
}

TEST_CASE("acquire and report replies", "[dispatcher]") {
    Fixture f;
    f.call(R"({"op":"configure","key":"api","policy":{"failureThreshold":1,"resetTimeoutMs":100}})");
    auto a = f.call(R"({"op":"acquire","key":"api","id":1})");
    CHECK(a["allowed"] == true);
    CHECK_FALSE(a.contains("permit"));
    CHECK_FALSE(a.contains("retryAfterMs"));

    auto r = f.call(R"({"op":"report","key":"api","outcome":"failure","generation":)" +
                    a["generation"].dump() + "}");
    CHECK(r["transition"] == json::parse(R"({"from":"closed","to":"open","cause":"threshold"})"));
    CHECK(r["snapshot"]["state"] == "open");

    auto denied = f.call(R"({"op":"acquire","key":"api"})");
    CHECK(denied["allowed"] == false);
    CHECK(denied["retryAfterMs"] == 100);

    f.clock.advance(100);
    auto probe = f.call(R"({"op":"acquire","key":"api"})");
    CHECK(probe["allowed"] == true);
    CHECK(probe["permit"].is_string());
    CHECK(probe["transition"]["cause"] == "timeout");

    auto no_permit = f.call(R"({"op":"report","key":"api","outcome":"success"})");
    CHECK(no_permit["error"]["code"] == "no_permit");
    CHECK(no_permit["snapshot"]["state"] == "half-open");

    auto stale = f.call(R"({"op":"report","key":"api","outcome":"success","generation":1})");
    CHECK(stale["stale"] == true);

    auto closed = f.call(R"({"op":"report","key":"api","outcome":"success","permit":)" +
                         probe["permit"].dump() + "}");
    CHECK(closed["transition"]["cause"] == "probe-success");
}

TEST_CASE("conflict and forced errors carry the circuit", "[dispatcher]") {
    Fixture f;
    f.call(R"({"op":"transition","key":"k","to":"open"})");
    auto c = f.call(R"({"op":"transition","key":"k","to":"open","expect":"closed","id":5})");
    CHECK(c["ok"] == false);
    CHECK(c["id"] == 5);
    CHECK(c["error"]["code"] == "conflict");
    CHECK(c["snapshot"]["state"] == "open");
    CHECK(c.contains("generation"));

    f.peer = Peer{1000, 1000, 77};
    auto pinned = f.call(R"({"op":"force","key":"k","state":"closed","ttlMs":60000,"reason":"drill"})");
    CHECK(pinned["forced"] == json::parse(R"({"state":"closed","until":1764201660000,"reason":"drill","by":{"uid":1000,"pid":77}})"));
    auto refused = f.call(R"({"op":"transition","key":"k","to":"open"})");
    CHECK(refused["error"]["code"] == "forced");
    CHECK(refused["forced"]["state"] == "closed");
    auto lifted = f.call(R"({"op":"unforce","key":"k"})");
    CHECK(lifted["transition"]["cause"] == "unforce");
    CHECK_FALSE(lifted.contains("forced"));
}

TEST_CASE("policy replies say where each value came from", "[dispatcher]") {
    Fixture f;
    auto p = f.call(R"({"op":"policy","key":"api"})");
    CHECK(p["policy"] == json::parse(R"({"failureThreshold":5,"resetTimeoutMs":30000,"halfOpenMax":1,"successThreshold":1,"probeLeaseMs":30000})"));
    CHECK(p["source"]["failureThreshold"] == "default");
    CHECK(p["prefix"].is_null());
    auto c = f.call(R"({"op":"configure","key":"api","policy":{"failureThreshold":3}})");
    CHECK(c["policy"]["failureThreshold"] == 3);
    CHECK(c["source"]["failureThreshold"] == "key");
    CHECK(f.store.size() == 0); // configuring a key does not create its circuit
}
