// The dispatcher: lines in, reply lines out, no sockets.
#include "daemon/backends/memory/memory_backend.hpp"
#include "daemon/backends/memory/memory_store.hpp"
#include "daemon/core/log.hpp"
#include "daemon/dispatch/dispatcher.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <stdexcept>

using namespace cbd;
using nlohmann::json;

namespace {

struct Fixture {
    Fixture() { log_init(LogLevel::Error); } // no audit lines in test output
    ManualClock clock{1'764'201'600'000};
    DaemonStats stats;
    EventHub events{stats}; // counts transitions, as in the daemon
    MemoryCircuitStore store{clock, 3, &events};
    MemoryBackend backend{store};
    Dispatcher dispatcher{backend, stats};
    Peer peer{};

    json call(std::string_view line) {
        std::string out;
        RequestContext ctx{peer, AccessLevel::Admin, std::nullopt, nullptr};
        dispatcher.handle_line(line, ctx, out);
        REQUIRE(!out.empty());
        REQUIRE(out.back() == '\n');
        REQUIRE(out.find('\n') == out.size() - 1); // exactly one line
        return json::parse(out);
    }

    // One line from a peer at `level` (uid 1000).
    json call_as(AccessLevel level, std::string_view line) {
        std::string out;
        RequestContext ctx{Peer{1000, 1000, 7}, level, std::nullopt, nullptr};
        dispatcher.handle_line(line, ctx, out);
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
    RequestContext ctx{f.peer, AccessLevel::Admin, std::nullopt, nullptr};
    f.dispatcher.handle_line("", ctx, out);
    f.dispatcher.handle_line("  \r", ctx, out);
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
    f.call(
        R"({"op":"configure","key":"api","policy":{"failureThreshold":1,"resetTimeoutMs":100}})");
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
    auto pinned =
        f.call(R"({"op":"force","key":"k","state":"closed","ttlMs":60000,"reason":"drill"})");
    CHECK(
        pinned["forced"] ==
        json::parse(
            R"({"state":"closed","until":1764201660000,"reason":"drill","by":{"uid":1000,"pid":77}})"));
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
    CHECK(
        p["policy"] ==
        json::parse(
            R"({"failureThreshold":5,"resetTimeoutMs":30000,"halfOpenMax":1,"successThreshold":1,"probeLeaseMs":30000,"tripRule":"count","windowType":"count","windowSize":100,"minimumCalls":100,"failureRateThreshold":50,"slowCallDurationMs":0,"slowCallRateThreshold":100,"resetTimeoutMaxMs":30000,"mode":"enforce"})"));
    CHECK(p["source"]["failureThreshold"] == "default");
    CHECK(p["prefix"].is_null());
    auto c = f.call(R"({"op":"configure","key":"api","policy":{"failureThreshold":3}})");
    CHECK(c["policy"]["failureThreshold"] == 3);
    CHECK(c["source"]["failureThreshold"] == "key");
    CHECK(f.store.size() == 0); // configuring a key does not create its circuit
}

TEST_CASE("watch asks the connection to become an event stream", "[dispatcher]") {
    Fixture f;
    std::string out;
    RequestContext ctx{f.peer, AccessLevel::Admin, std::nullopt, nullptr};
    f.dispatcher.handle_line(R"({"op":"watch","prefix":"pay","id":1})", ctx, out);
    CHECK(json::parse(out) == json::parse(R"({"id":1,"ok":true,"watching":{"prefix":"pay"}})"));
    REQUIRE(ctx.start_watch);
    CHECK(ctx.start_watch->kind == WatchFilter::Kind::Prefix);
    CHECK(ctx.start_watch->matches("payments"));
    CHECK_FALSE(ctx.start_watch->matches("search"));

    RequestContext all{f.peer, AccessLevel::Admin, std::nullopt, nullptr};
    out.clear();
    f.dispatcher.handle_line(R"({"op":"watch"})", all, out);
    CHECK(json::parse(out)["watching"] == "all");
    REQUIRE(all.start_watch);
    CHECK(all.start_watch->matches("anything"));

    RequestContext both{f.peer, AccessLevel::Admin, std::nullopt, nullptr};
    out.clear();
    f.dispatcher.handle_line(R"({"op":"watch","key":"a","prefix":"b"})", both, out);
    CHECK(json::parse(out)["error"]["code"] == "invalid_request");
    CHECK_FALSE(both.start_watch);
}

TEST_CASE("list pages through circuits in key order", "[dispatcher]") {
    ManualClock clock{1'764'201'600'000};
    MemoryCircuitStore store{clock, 100};
    DaemonStats stats;
    MemoryBackend backend{store};
    Dispatcher d{backend, stats};
    for (const char* k : {"b", "a/2", "c", "a/1", "a/3"})
        store.get(k);
    store.transition("c", State::Open, {});
    auto call = [&](std::string_view line) {
        std::string out;
        RequestContext ctx{};
        d.handle_line(line, ctx, out);
        return json::parse(out);
    };
    auto keys = [](const json& page) {
        std::vector<std::string> k;
        for (const auto& c : page["circuits"])
            k.push_back(c["key"]);
        return k;
    };
    auto p1 = call(R"({"op":"list","limit":2})");
    CHECK(keys(p1) == std::vector<std::string>{"a/1", "a/2"});
    CHECK(p1["next"] == "a/2");
    CHECK(p1["circuits"][0].contains("generation"));
    auto p2 = call(R"({"op":"list","limit":2,"after":"a/2"})");
    CHECK(keys(p2) == std::vector<std::string>{"a/3", "b"});
    auto p3 = call(R"({"op":"list","limit":2,"after":"b"})");
    CHECK(keys(p3) == std::vector<std::string>{"c"});
    CHECK(p3["next"].is_null());
    CHECK(keys(call(R"({"op":"list","prefix":"a/"})")) ==
          std::vector<std::string>{"a/1", "a/2", "a/3"});
    CHECK(keys(call(R"({"op":"list","state":"open"})")) == std::vector<std::string>{"c"});
    CHECK(call(R"({"op":"list","limit":0})")["error"]["code"] == "invalid_request");
    CHECK(call(R"({"op":"list","limit":10001})")["error"]["code"] == "invalid_request");
    CHECK(call(R"({"op":"list","state":"opened"})")["error"]["code"] == "invalid_state");
}

TEST_CASE("stats count requests, errors and circuits", "[dispatcher]") {
    Fixture f;
    f.call(R"({"op":"failure","key":"a"})");
    f.call(R"({"op":"failure","key":"a"})");
    f.call(R"({"op":"transition","key":"b","to":"open"})");
    f.call(R"({"op":"bogus"})");
    f.call("not json");
    f.call(R"({"op":"get","key":""})");
    auto s = f.call(R"({"op":"stats"})");
    CHECK(s["requests"]["failure"] == 2);
    CHECK(s["requests"]["transition"] == 1);
    CHECK(s["requests"]["stats"] == 1);
    CHECK(s["errors"]["unknown_op"] == 1);
    CHECK(s["errors"]["parse_error"] == 1);
    CHECK(s["errors"]["invalid_key"] == 1);
    CHECK(s["circuits"] ==
          json::parse(R"({"total":2,"closed":1,"open":1,"halfOpen":0,"forced":0})"));
    CHECK(s["protocol"] == kProtocolVersion);
    CHECK(s["residentMemoryBytes"].get<std::uint64_t>() > 0);
}

TEST_CASE("metrics render the counters as Prometheus text", "[dispatcher]") {
    Fixture f;
    f.call(R"({"op":"configure","key":"a","policy":{"failureThreshold":1}})");
    f.call(R"({"op":"report","key":"a","outcome":"failure"})");
    f.call(R"({"op":"get","key":"we\"ird"})");
    auto m = f.call(R"({"op":"metrics","perCircuit":true})");
    const std::string text = m["text"];
    CHECK(text.find("cbd_requests_total{op=\"report\"} 1\n") != std::string::npos);
    CHECK(text.find("cbd_transitions_total{from=\"closed\",to=\"open\",cause=\"threshold\"} 1\n") !=
          std::string::npos);
    CHECK(text.find("cbd_circuits{state=\"open\"} 1\n") != std::string::npos);
    CHECK(text.find("cbd_circuit_state{key=\"a\",state=\"open\"} 1\n") != std::string::npos);
    CHECK(text.find("cbd_circuit_state{key=\"we\\\"ird\",state=\"closed\"} 1\n") !=
          std::string::npos);
    auto plain = f.call(R"({"op":"metrics"})");
    CHECK(plain["text"].get<std::string>().find("cbd_circuit_state") == std::string::npos);
}

TEST_CASE("each op is allowed from its access level up", "[dispatcher]") {
    Fixture f;
    auto as = [&](AccessLevel level, std::string_view line) { return f.call_as(level, line); };
    const std::vector<std::pair<std::string, AccessLevel>> ops = {
        {R"({"op":"get","key":"a"})", AccessLevel::Read},
        {R"({"op":"ping"})", AccessLevel::Read},
        {R"({"op":"policy","key":"a"})", AccessLevel::Read},
        {R"({"op":"list"})", AccessLevel::Read},
        {R"({"op":"stats"})", AccessLevel::Read},
        {R"({"op":"metrics"})", AccessLevel::Read},
        {R"({"op":"success","key":"a"})", AccessLevel::Write},
        {R"({"op":"failure","key":"a"})", AccessLevel::Write},
        {R"({"op":"acquire","key":"a"})", AccessLevel::Write},
        {R"({"op":"report","key":"a","outcome":"success"})", AccessLevel::Write},
        {R"({"op":"transition","key":"a","to":"open"})", AccessLevel::Admin},
        {R"({"op":"reset","key":"a"})", AccessLevel::Admin},
        {R"({"op":"force","key":"a","state":"open"})", AccessLevel::Admin},
        {R"({"op":"unforce","key":"a"})", AccessLevel::Admin},
        {R"({"op":"configure","key":"a","policy":{}})", AccessLevel::Admin},
    };
    for (const auto& [line, needed] : ops) {
        for (AccessLevel level : {AccessLevel::Read, AccessLevel::Write, AccessLevel::Admin}) {
            auto r = as(level, line);
            INFO(line << " at level " << access_level_name(level));
            if (level >= needed) {
                CHECK(r["ok"] == true);
            } else {
                CHECK(r["error"]["code"] == "permission_denied");
                CHECK(r["error"]["message"].get<std::string>().find(
                          std::string(access_level_name(needed))) != std::string::npos);
            }
        }
    }
}

TEST_CASE("a read-level get of an unknown key answers the default and creates nothing",
          "[dispatcher]") {
    Fixture f;
    auto as = [&](AccessLevel level, std::string_view line) { return f.call_as(level, line); };
    auto r = as(AccessLevel::Read, R"({"op":"get","key":"new"})");
    CHECK(r == json::parse(R"({"ok":true,"snapshot":{"state":"closed","failureCount":0,
        "successCount":0,"lastFailureTime":0,"lastStateChange":1764201600000},"generation":0})"));
    CHECK(f.store.size() == 0);
    // time moves on: nothing was remembered
    f.clock.advance(7);
    CHECK(as(AccessLevel::Read, R"({"op":"get","key":"new"})")["snapshot"]["lastStateChange"] ==
          1'764'201'600'007);
    CHECK(f.store.size() == 0);
    // a writer's get creates it, and then readers see that circuit
    r = as(AccessLevel::Write, R"({"op":"get","key":"new"})");
    CHECK(r["generation"].get<std::uint64_t>() > 0);
    CHECK(f.store.size() == 1);
    f.clock.advance(100);
    auto seen = as(AccessLevel::Read, R"({"op":"get","key":"new"})");
    CHECK(seen["generation"] == r["generation"]);
    CHECK(seen["snapshot"]["lastStateChange"] == 1'764'201'600'007);
}

TEST_CASE("reportBatch applies its entries as reports, in order", "[dispatcher]") {
    Fixture f;
    f.call(R"({"op":"configure","key":"a","policy":{"failureThreshold":3}})");
    const auto g = f.call(R"({"op":"acquire","key":"a"})")["generation"].get<std::uint64_t>();
    const std::string entry =
        R"({"key":"a","outcome":"failure","generation":)" + std::to_string(g) + "}";
    auto r = f.call(R"({"op":"reportBatch","id":"x","reports":[)" + entry + "," + entry + "," +
                    entry + "," + entry + R"(,{"key":"b","outcome":"bad"}]})");
    CHECK(r["id"] == "x");
    CHECK(r["applied"] == 3);
    CHECK(r["stale"] == 1);
    REQUIRE(r["errors"].size() == 1);
    CHECK(r["errors"][0]["index"] == 4);
    CHECK(r["errors"][0]["code"] == "invalid_request");
    auto a = f.call(R"({"op":"get","key":"a"})");
    CHECK(a["snapshot"]["state"] == "open");
    CHECK(a["snapshot"]["failureCount"] == 3);
    CHECK(f.stats.requests[static_cast<std::size_t>(Op::ReportBatch)] == 1);
}

namespace {

// What the fake backends below do not care about.
struct FakeBackend : CircuitBackend {
    std::optional<CircuitCounts> counts() const override { return std::nullopt; }
    bool list_now(const ListQuery&, ListPage&) override { return false; }
    void set_policy_config(PolicyConfig) override {}
    void tick() override {}
};

// A backend that answers every operation later, when the test says, in any
// order: what Redis and durable mode do to the dispatcher.
struct LateBackend final : FakeBackend {
    std::vector<std::pair<std::string, Completion>> waiting;
    bool run(const Request& req, const Peer&, OpOutcome&, Deferral& deferral) override {
        waiting.emplace_back(req.key, deferral.later());
        return false;
    }
};

} // namespace

TEST_CASE("reportBatch waits for every entry, answers once, and weighs its entries",
          "[dispatcher]") {
    log_init(LogLevel::Error);
    DaemonStats stats;
    LateBackend backend;
    Dispatcher dispatcher{backend, stats};
    RequestContext ctx{Peer{}, AccessLevel::Admin, std::nullopt, std::make_shared<ReplyQueue>()};
    dispatcher.handle_line(R"({"op":"ping","id":1})", ctx);
    dispatcher.handle_line(
        R"({"op":"reportBatch","id":2,"reports":[{"key":"a","outcome":"success"},)"
        R"(7,{"key":"b","outcome":"failure"},{"key":"c","outcome":"failure"}]})",
        ctx);
    dispatcher.handle_line(R"({"op":"ping","id":3})", ctx);
    REQUIRE(backend.waiting.size() == 3);
    CHECK(ctx.replies->waiting() == 4); // the batch's four entries, one slot
    std::string out;
    ctx.replies->take_ready(out);
    CHECK(out.find("\"id\":1") != std::string::npos);
    CHECK(out.find("\"id\":3") == std::string::npos); // held behind the batch

    ReportResult stale_report;
    stale_report.stale = true;
    OpOutcome stale;
    stale.result = stale_report;
    OpOutcome refused;
    refused.fail(ErrorCode::BackendUnavailable, "redis is away");
    backend.waiting[2].second(stale);       // c answers first
    backend.waiting[0].second(OpOutcome{}); // then a
    out.clear();
    ctx.replies->take_ready(out);
    CHECK(out.empty()); // b is still to come
    backend.waiting[1].second(refused);
    CHECK(ctx.replies->waiting() == 0);
    out.clear();
    ctx.replies->take_ready(out);
    const auto newline = out.find('\n');
    REQUIRE(newline != std::string::npos);
    auto r = json::parse(out.substr(0, newline));
    CHECK(r["id"] == 2);
    CHECK(r["applied"] == 1);
    CHECK(r["stale"] == 1);
    REQUIRE(r["errors"].size() == 2);
    CHECK(r["errors"][0]["index"] == 1);
    CHECK(r["errors"][1]["index"] == 2);
    CHECK(r["errors"][1]["code"] == "backend_unavailable");
    CHECK(r["errors"][1]["message"] == "redis is away");
    CHECK(out.substr(newline + 1).find("\"id\":3") != std::string::npos);
}

TEST_CASE("watch with a key set matches exactly its keys", "[dispatcher]") {
    Fixture f;
    std::string out;
    RequestContext ctx{f.peer, AccessLevel::Read, std::nullopt, nullptr};
    f.dispatcher.handle_line(R"({"op":"watch","keys":["b","a"]})", ctx, out);
    CHECK(json::parse(out)["watching"] == json{{"keys", 2}});
    REQUIRE(ctx.start_watch);
    CHECK(ctx.start_watch->kind == WatchFilter::Kind::Keys);
    CHECK(ctx.start_watch->matches("a"));
    CHECK(ctx.start_watch->matches("b"));
    CHECK_FALSE(ctx.start_watch->matches("ab"));
    CHECK_FALSE(ctx.start_watch->matches(""));
}

namespace {

// A backend that takes a slot for key "boom" and then throws, having
// answered first (answer_first) or keeping the completion for later; other
// keys answer later, when the test says.
struct ThrowingBackend final : FakeBackend {
    bool answer_first = false;
    std::vector<Completion> kept;
    bool run(const Request& req, const Peer&, OpOutcome&, Deferral& deferral) override {
        auto done = deferral.later();
        if (req.key == "boom") {
            if (answer_first)
                done(OpOutcome{});
            else
                kept.push_back(done);
            throw std::runtime_error("boom");
        }
        kept.push_back(std::move(done));
        return false;
    }
};

} // namespace

TEST_CASE("a batch entry whose backend throws after taking a slot answers once", "[dispatcher]") {
    log_init(LogLevel::Error);
    for (bool answer_first : {true, false}) {
        INFO("answered before throwing: " << answer_first);
        DaemonStats stats;
        ThrowingBackend backend;
        backend.answer_first = answer_first;
        Dispatcher dispatcher{backend, stats};
        RequestContext ctx{Peer{}, AccessLevel::Admin, std::nullopt,
                           std::make_shared<ReplyQueue>()};
        dispatcher.handle_line(
            R"({"op":"reportBatch","id":1,"reports":[)"
            R"({"key":"boom","outcome":"success"},{"key":"b","outcome":"success"}]})",
            ctx);
        dispatcher.handle_line(R"({"op":"ping","id":2})", ctx);
        std::string out;
        ctx.replies->take_ready(out);
        CHECK(out.empty()); // b has not answered
        for (auto& done : backend.kept)
            done(OpOutcome{}); // b, and boom's kept completion (ignored)
        CHECK(ctx.replies->waiting() == 0);
        ctx.replies->take_ready(out);
        const auto newline = out.find('\n');
        REQUIRE(newline != std::string::npos);
        auto r = json::parse(out.substr(0, newline));
        CHECK(r["id"] == 1);
        const auto entries =
            r["applied"].get<int>() + r["stale"].get<int>() + static_cast<int>(r["errors"].size());
        CHECK(entries == 2);
        if (!answer_first) {
            REQUIRE(r["errors"].size() == 1);
            CHECK(r["errors"][0]["index"] == 0);
            CHECK(r["errors"][0]["code"] == "internal_error");
        }
        CHECK(out.substr(newline + 1).find("\"id\":2") != std::string::npos);
    }
}
