// The HTTP listener's pure parts: targets and their query parameters, the
// protocol requests they become, the Host check, listen addresses, SSE
// framing and the bounded SSE queue.
#include "daemon/http/http_request.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

using namespace cbd;

namespace {
HttpTarget target_of(std::string_view text) {
    std::string error;
    auto t = parse_http_target(text, error);
    INFO(error);
    REQUIRE(t);
    return *t;
}

std::string refusal_of(std::string_view text) {
    std::string error;
    CHECK_FALSE(parse_http_target(text, error));
    return error;
}

nlohmann::json line_of(std::string_view text) {
    std::string error;
    auto line = api_request_line(target_of(text), error);
    INFO(error);
    REQUIRE(line);
    return nlohmann::json::parse(*line);
}
} // namespace

TEST_CASE("targets name their route; the query does not", "[http]") {
    CHECK(target_of("/").route == HttpRoute::Dashboard);
    CHECK(target_of("/metrics").route == HttpRoute::Metrics);
    CHECK(target_of("/api/circuits?limit=5").route == HttpRoute::Circuits);
    CHECK(target_of("/api/policy?key=a").route == HttpRoute::Policy);
    CHECK(target_of("/api/events").route == HttpRoute::Events);
    CHECK(target_of("/api/circuits/").route == HttpRoute::NotFound);
    CHECK(target_of("/index.html?whatever=%zz").route == HttpRoute::NotFound);
}

TEST_CASE("query values are percent-decoded, '+' is a space", "[http]") {
    const auto t = target_of("/api/circuits?prefix=pay%2Fments+eu&&state=open&after=");
    REQUIRE(t.params.size() == 3);
    CHECK(*t.param("prefix") == "pay/ments eu");
    CHECK(*t.param("state") == "open");
    CHECK(*t.param("after") == "");
    CHECK(t.param("limit") == nullptr);
    CHECK(*target_of("/api/events?prefix=%e2%9C%93").param("prefix") == "\xe2\x9c\x93");
}

TEST_CASE("bad targets are refused with a reason", "[http]") {
    CHECK(refusal_of("/api/circuits?prefix=%2") == "bad %-escape in the query");
    CHECK(refusal_of("/api/circuits?prefix=%g0") == "bad %-escape in the query");
    CHECK(refusal_of("/api/circuits?prefix=a&prefix=b") ==
          "query parameter \"prefix\" given twice");
    CHECK(refusal_of("/api/circuits?colour=red") ==
          "/api/circuits takes no query parameter \"colour\"; it takes prefix state after limit");
    CHECK(refusal_of("/?x=1") == "/ takes no query parameter \"x\"");
    // A name that is not text is quoted by the JSON library, not passed on raw.
    CHECK(refusal_of("/api/events?%0a=1") ==
          "/api/events takes no query parameter \"\\n\"; it takes prefix");
    CHECK(refusal_of("/api/circuits?" + std::string(kMaxHttpTargetBytes, 'a'))
              .starts_with("request target longer than"));
}

TEST_CASE("/api routes become read-only protocol requests", "[http]") {
    CHECK(line_of("/api/circuits") == nlohmann::json{{"op", "list"}});
    CHECK(
        line_of("/api/circuits?prefix=a%22b&limit=20&state=open&after=x") ==
        nlohmann::json{
            {"op", "list"}, {"prefix", "a\"b"}, {"limit", 20}, {"state", "open"}, {"after", "x"}});
    CHECK(line_of("/api/policy?key=payments") ==
          nlohmann::json{{"op", "policy"}, {"key", "payments"}});
    // Ranges are the dispatcher's to check, as for every client.
    CHECK(line_of("/api/circuits?limit=0")["limit"] == 0);
}

TEST_CASE("values that cannot be carried are refused", "[http]") {
    std::string error;
    CHECK_FALSE(api_request_line(target_of("/api/circuits?limit=ten"), error));
    CHECK(error == "limit must be a decimal integer");
    CHECK_FALSE(api_request_line(target_of("/api/circuits?limit=-1"), error));
    CHECK_FALSE(api_request_line(target_of("/api/circuits?limit="), error));
    CHECK_FALSE(api_request_line(target_of("/api/circuits?limit=99999999999999999999999"), error));
    CHECK_FALSE(api_request_line(target_of("/api/circuits?prefix=%ff"), error));
    CHECK(error == "a query parameter is not valid UTF-8");
    CHECK_FALSE(api_request_line(target_of("/api/events"), error));
}

TEST_CASE("event filters and per-circuit metrics come from the query", "[http]") {
    CHECK(event_filter(target_of("/api/events")).kind == WatchFilter::Kind::All);
    CHECK(event_filter(target_of("/api/events?prefix=")).kind == WatchFilter::Kind::All);
    const auto f = event_filter(target_of("/api/events?prefix=pay"));
    CHECK(f.kind == WatchFilter::Kind::Prefix);
    CHECK(f.matches("payments"));
    CHECK_FALSE(f.matches("search"));
    CHECK(metrics_per_circuit(target_of("/metrics?perCircuit=true")));
    CHECK(metrics_per_circuit(target_of("/metrics?perCircuit=1")));
    CHECK_FALSE(metrics_per_circuit(target_of("/metrics?perCircuit=false")));
    CHECK_FALSE(metrics_per_circuit(target_of("/metrics")));
}

TEST_CASE("reply lines map to HTTP statuses", "[http]") {
    CHECK(http_status_for_reply(R"({"ok":true,"circuits":[],"next":null})"
                                "\n") == 200);
    CHECK(http_status_for_reply(R"({"ok":false,"error":{"code":"invalid_state","message":"x"}})") ==
          400);
    CHECK(http_status_for_reply(
              R"({"ok":false,"error":{"code":"backend_unavailable","message":"x"}})") == 503);
    CHECK(http_status_for_reply(
              R"({"ok":false,"error":{"code":"storage_unavailable","message":"x"}})") == 503);
    CHECK(http_status_for_reply(R"({"ok":false,"error":{"code":"backend_error","message":"x"}})") ==
          500);
    CHECK(http_status_for_reply(
              R"({"ok":false,"error":{"code":"permission_denied","message":"x"}})") == 403);
    CHECK(http_status_for_reply("") == 500);
    CHECK(http_status_for_reply("not json") == 500);
}

TEST_CASE("listen addresses", "[http]") {
    std::string error;
    auto ep = parse_listen_address("127.0.0.1:9464", error);
    REQUIRE(ep);
    CHECK(ep->port() == 9464);
    CHECK(ep->address().is_loopback());
    ep = parse_listen_address("[::1]:0", error);
    REQUIRE(ep);
    CHECK(ep->address().is_v6());
    CHECK_FALSE(parse_listen_address("0.0.0.0:9464", error)->address().is_loopback());
    CHECK_FALSE(parse_listen_address("nonsense", error));
    CHECK(error.starts_with("expected ADDRESS:PORT"));
    CHECK_FALSE(parse_listen_address("127.0.0.1:65536", error));
    CHECK(error.starts_with("bad port"));
    CHECK_FALSE(parse_listen_address("127.0.0.1:-1", error));
    CHECK_FALSE(parse_listen_address("localhost:80", error));
    CHECK(error == "'localhost' is not an IP address");
}

TEST_CASE("only IP literals and localhost are served as Host on loopback", "[http]") {
    CHECK(http_host_allowed("127.0.0.1:8080", false));
    CHECK(http_host_allowed("127.0.0.1", false));
    CHECK(http_host_allowed("localhost:8080", false));
    CHECK(http_host_allowed("[::1]:8080", false));
    CHECK(http_host_allowed("[::1]", false));
    CHECK_FALSE(http_host_allowed("evil.example", false));
    CHECK_FALSE(http_host_allowed("evil.example:8080", false));
    CHECK_FALSE(http_host_allowed("localhost.evil.example", false));
    CHECK_FALSE(http_host_allowed("[::1", false));
    CHECK_FALSE(http_host_allowed("[::1]x", false));
    CHECK(http_host_allowed("", false)); // no Host: not a browser
    CHECK(http_host_allowed("dashboards.internal", true));
}

TEST_CASE("SSE messages frame any text", "[http][sse]") {
    CHECK(sse_message("{\"event\":\"reset\"}\n") == "data: {\"event\":\"reset\"}\n\n");
    CHECK(sse_message("one\ntwo") == "data: one\ndata: two\n\n");
    CHECK(sse_message("") == "data: \n\n");
    CHECK(sse_message("a\n\nb\n") == "data: a\ndata: \ndata: b\n\n");
}

TEST_CASE("the SSE queue is bounded like a watcher's", "[http][sse]") {
    SseQueue q(3);
    auto line = [](std::string s) { return std::make_shared<const std::string>(std::move(s)); };
    CHECK(q.empty());
    CHECK(q.push(line("{\"n\":1}\n")));
    CHECK(q.push(line("{\"n\":2}\n")));
    std::string out;
    q.take(out);
    CHECK(out == "data: {\"n\":1}\n\ndata: {\"n\":2}\n\n");
    CHECK(q.empty());

    CHECK(q.push(line("a")));
    CHECK(q.push(line("b")));
    CHECK(q.push(line("c")));
    CHECK_FALSE(q.push(line("d"))); // the fourth overflows: all four are lost
    CHECK(q.overflowed());
    CHECK(q.dropped() == 4);
    CHECK_FALSE(q.push(line("e")));
    CHECK(q.dropped() == 4);
    CHECK_FALSE(q.empty()); // the overflow message is owed
    out.clear();
    q.take(out);
    CHECK(out == "data: {\"event\":\"overflow\",\"dropped\":4}\n\n");
    CHECK(q.empty());
    out.clear();
    q.take(out);
    CHECK(out.empty()); // once only
}
