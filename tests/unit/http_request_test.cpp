// The HTTP listener's pure parts: request heads and every way one is
// refused, targets and their query parameters, the protocol requests they
// become, the Host check, listen addresses, responses, SSE framing and the
// bounded SSE queue.
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
    std::string error;
    CHECK(metrics_per_circuit(target_of("/metrics?perCircuit=true"), error) == true);
    CHECK(metrics_per_circuit(target_of("/metrics?perCircuit=1"), error) == true);
    CHECK(metrics_per_circuit(target_of("/metrics?perCircuit=false"), error) == false);
    CHECK(metrics_per_circuit(target_of("/metrics?perCircuit=0"), error) == false);
    CHECK(metrics_per_circuit(target_of("/metrics"), error) == false);
    // Anything else is a 400, not a silent "no".
    CHECK_FALSE(metrics_per_circuit(target_of("/metrics?perCircuit=maybe"), error));
    CHECK(error == "perCircuit must be true or false");
    CHECK_FALSE(metrics_per_circuit(target_of("/metrics?perCircuit="), error));
    CHECK_FALSE(metrics_per_circuit(target_of("/metrics?perCircuit=TRUE"), error));
}

namespace {
// Feeds `bytes` to a new reader in pieces of `piece` bytes; the final state.
HttpHeadReader read_head(std::string_view bytes, std::size_t piece = 0) {
    HttpHeadReader reader;
    if (piece == 0)
        piece = bytes.size();
    for (std::size_t i = 0; i < bytes.size(); i += piece) {
        const auto state = reader.feed(bytes.substr(i, piece));
        if (state == HttpHeadReader::State::Refused || state == HttpHeadReader::State::Complete)
            break;
    }
    return reader;
}

unsigned refusal_status(std::string_view bytes, std::size_t piece = 0) {
    const auto reader = read_head(bytes, piece);
    INFO(std::string(bytes.substr(0, 80)));
    REQUIRE(reader.state() == HttpHeadReader::State::Refused);
    return reader.refusal().status;
}
} // namespace

TEST_CASE("a request head is read in any pieces", "[http][head]") {
    const std::string request = "GET /metrics?perCircuit=true HTTP/1.1\r\n"
                                "host: 127.0.0.1:9464\r\n"
                                "User-Agent: Prometheus/2.45.0\r\n"
                                "Accept: text/plain;q=0.9, */*;q=0.1\r\n"
                                "X-Empty:\r\n"
                                "\r\n";
    for (std::size_t piece : {std::size_t{1}, std::size_t{2}, std::size_t{7}, request.size()}) {
        INFO(piece);
        const auto reader = read_head(request, piece);
        REQUIRE(reader.state() == HttpHeadReader::State::Complete);
        CHECK(reader.head().method == "GET");
        CHECK(reader.head().target == "/metrics?perCircuit=true");
        CHECK(reader.head().minor_version == 1);
        CHECK(reader.head().host == "127.0.0.1:9464");
        CHECK(reader.head().keep_alive);
    }
    HttpHeadReader reader;
    CHECK(reader.state() == HttpHeadReader::State::Empty);
    CHECK(reader.feed("GET / HTTP/1.1\r\nHost: a\r\n") == HttpHeadReader::State::Partial);
    CHECK(reader.feed("\r") == HttpHeadReader::State::Partial);
    CHECK(reader.feed("\n") == HttpHeadReader::State::Complete);
}

TEST_CASE("keep-alive, Connection: close, HTTP/1.0 and pipelined heads", "[http][head]") {
    auto head = read_head("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n");
    REQUIRE(head.state() == HttpHeadReader::State::Complete);
    CHECK_FALSE(head.head().keep_alive);
    // HTTP/1.0: no Host needed (RFC 9112, 3.2), and never kept alive.
    head = read_head("GET /metrics HTTP/1.0\r\n\r\n");
    REQUIRE(head.state() == HttpHeadReader::State::Complete);
    CHECK(head.head().minor_version == 0);
    CHECK(head.head().host.empty());
    CHECK_FALSE(head.head().keep_alive);
    // HEAD and a Content-Length of 0 are served; an empty line before the
    // request line is ignored (RFC 9112, 2.2).
    head = read_head("\r\nHEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    REQUIRE(head.state() == HttpHeadReader::State::Complete);
    CHECK(head.head().method == "HEAD");

    HttpHeadReader reader;
    REQUIRE(
        reader.feed("GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\nGET /c") ==
        HttpHeadReader::State::Complete);
    CHECK(reader.head().target == "/a");
    REQUIRE(reader.next() == HttpHeadReader::State::Complete);
    CHECK(reader.head().target == "/b");
    CHECK(reader.next() == HttpHeadReader::State::Partial);
    CHECK(reader.feed(" HTTP/1.1\r\nHost: h\r\n\r\n") == HttpHeadReader::State::Complete);
    CHECK(reader.head().target == "/c");
    CHECK(reader.next() == HttpHeadReader::State::Empty);
}

TEST_CASE("line ends are CRLF: a bare LF or CR is a 400", "[http][head]") {
    for (std::size_t piece : {std::size_t{1}, std::size_t{0}}) {
        CHECK(refusal_status("GET / HTTP/1.1\nHost: a\n\n", piece) == 400);
        CHECK(refusal_status("GET / HTTP/1.1\r\nHost: a\n\r\n", piece) == 400);
        CHECK(refusal_status("GET / HTTP/1.1\r\nHost: a\r\n\n", piece) == 400);
        CHECK(refusal_status("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", piece) == 400);
        CHECK(refusal_status("GET / HTTP/1.1\r\r\n", piece) == 400);
    }
    // Refused at the bare LF, not when the head would end.
    HttpHeadReader reader;
    CHECK(reader.feed("GET / HTTP/1.1\n") == HttpHeadReader::State::Refused);
    CHECK(reader.refusal().reason == "a bare LF in the request head (lines end in CRLF)");
}

TEST_CASE("exactly one Host in HTTP/1.1", "[http][head]") {
    CHECK(refusal_status("GET / HTTP/1.1\r\n\r\n") == 400);
    CHECK(refusal_status("GET / HTTP/1.1\r\nHost: a\r\nhOST: a\r\n\r\n") == 400);
    CHECK(refusal_status("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n") == 400);
    CHECK(refusal_status("GET / HTTP/1.1\r\nHost: a b\r\n\r\n") == 400);
    CHECK(refusal_status("GET / HTTP/1.1\r\nHost: a/b@c\r\n\r\n") == 400);
    const auto reader = read_head("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    CHECK(reader.refusal().reason == "more than one Host header field");
}

TEST_CASE("malformed header fields are a 400", "[http][head]") {
    CHECK(refusal_status("GET / HTTP/1.1\r\nHost : a\r\n\r\n") == 400); // space before ':'
    CHECK(refusal_status("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n") == 400); // folded
    CHECK(refusal_status("GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n") == 400);
    CHECK(refusal_status("GET / HTTP/1.1\r\nHost: a\r\n: empty name\r\n\r\n") == 400);
    CHECK(refusal_status(std::string("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 35)) == 400);
    CHECK(refusal_status("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n") == 400);
    CHECK(refusal_status("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n"
                         "Content-Length: 0\r\n\r\n") == 400);
    CHECK(refusal_status("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n") == 400);
}

TEST_CASE("bad request lines: 400, or 505 for another HTTP version", "[http][head]") {
    CHECK(refusal_status("GET /\r\n\r\n") == 400);                      // HTTP/0.9
    CHECK(refusal_status("GET  / HTTP/1.1\r\nHost: a\r\n\r\n") == 400); // two spaces
    CHECK(refusal_status("GET / HTTP/1.1 \r\nHost: a\r\n\r\n") == 400);
    CHECK(refusal_status("GET / FTP/1.1\r\nHost: a\r\n\r\n") == 400);
    CHECK(refusal_status("GET / HTTP/1.x\r\nHost: a\r\n\r\n") == 400);
    CHECK(refusal_status("GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n") == 400);
    CHECK(refusal_status("GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n") == 400);
    CHECK(refusal_status("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") == 505); // the HTTP/2 preface
    CHECK(refusal_status("GET / HTTP/2\r\nHost: a\r\n\r\n") == 505);
    CHECK(refusal_status("GET / HTTP/3.0\r\nHost: a\r\n\r\n") == 505);
    // Not HTTP at all (a TLS ClientHello): refused at its first byte.
    HttpHeadReader reader;
    CHECK(reader.feed("\x16") == HttpHeadReader::State::Refused);
    CHECK(reader.refusal().status == 400);
    CHECK(refusal_status(" GET / HTTP/1.1\r\n") == 400);
}

TEST_CASE("only GET and HEAD, and no body", "[http][head]") {
    CHECK(refusal_status("POST / HTTP/1.1\r\nHost: a\r\n\r\n") == 405);
    CHECK(refusal_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc") == 405);
    CHECK(refusal_status("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello") == 413);
    CHECK(refusal_status("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n") == 413);
}

TEST_CASE("a head is bounded: 431, or 414 for the request line", "[http][head]") {
    const std::string pad(kMaxHttpHeadBytes, 'a');
    CHECK(refusal_status("GET / HTTP/1.1\r\nHost: a\r\nX: " + pad + "\r\n\r\n") == 431);
    CHECK(refusal_status("GET /" + pad + " HTTP/1.1\r\nHost: a\r\n\r\n") == 414);
    // Refused once the bound is passed, not when (if ever) the head ends.
    HttpHeadReader reader;
    reader.feed("GET / HTTP/1.1\r\nX: ");
    CHECK(reader.feed(pad) == HttpHeadReader::State::Refused);
    CHECK(reader.refusal().status == 431);
    // Exactly at the bound is served.
    const std::string start = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
    const std::string fits =
        start + std::string(kMaxHttpHeadBytes - start.size() - 4, 'b') + "\r\n\r\n";
    REQUIRE(fits.size() == kMaxHttpHeadBytes);
    CHECK(read_head(fits).state() == HttpHeadReader::State::Complete);
    CHECK(refusal_status(start + std::string(kMaxHttpHeadBytes - start.size() - 3, 'b') +
                         "\r\n\r\n") == 431);
}

TEST_CASE("responses are serialized whole", "[http][head]") {
    HttpResponse r;
    r.status = 413;
    r.body = "no body\n";
    CHECK(serialize_http_response(r) == "HTTP/1.1 413 Content Too Large\r\n"
                                        "Server: cbd\r\n"
                                        "Content-Type: text/plain\r\n"
                                        "Cache-Control: no-store\r\n"
                                        "X-Content-Type-Options: nosniff\r\n"
                                        "Content-Length: 8\r\n"
                                        "Connection: close\r\n"
                                        "\r\n"
                                        "no body\n");
    r.status = 200;
    r.keep_alive = true;
    r.head_only = true;
    r.fields.emplace_back("Retry-After", "5");
    const auto head = serialize_http_response(r);
    CHECK(head.starts_with("HTTP/1.1 200 OK\r\n"));
    CHECK(head.find("Retry-After: 5\r\n") != std::string::npos);
    CHECK(head.find("Content-Length: 8\r\n") != std::string::npos); // the GET's length
    CHECK(head.find("Connection") == std::string::npos);
    CHECK(head.ends_with("\r\n\r\n"));
    for (unsigned status : {400U, 405U, 408U, 414U, 421U, 431U, 503U, 504U, 505U})
        CHECK(http_reason(status) != "Unknown");
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
