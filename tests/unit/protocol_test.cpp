// Request parsing and validation: every error code the parser can give.
#include "common/request.hpp"

#include <catch2/catch.hpp>

using namespace cbd;

namespace {

std::optional<RequestError> parse(std::string_view line, Request& req) {
    return parse_request(line, req);
}

ErrorCode code_of(std::string_view line) {
    Request req;
    auto err = parse_request(line, req);
    REQUIRE(err);
    return err->code;
}

} // namespace

TEST_CASE("well-formed requests parse", "[protocol]") {
    Request req;
    REQUIRE_FALSE(parse(R"({"op":"get","key":"api"})", req));
    CHECK(req.op == Op::Get);
    CHECK(req.key == "api");
    CHECK(req.id_json.empty());

    REQUIRE_FALSE(parse(R"({"op":"transition","key":"k","to":"half-open","id":7})", req));
    CHECK(req.op == Op::Transition);
    CHECK(req.to == State::HalfOpen);
    CHECK(req.id_json == "7");

    REQUIRE_FALSE(parse(R"({"op":"ping","id":"abc \"q\""})", req));
    CHECK(req.op == Op::Ping);
    CHECK(req.id_json == R"("abc \"q\"")");

    REQUIRE_FALSE(parse("{\"op\":\"reset\",\"key\":\"x\"}\r", req)); // CRLF framing
    CHECK(req.op == Op::Reset);
}

TEST_CASE("unknown fields are ignored", "[protocol]") {
    Request req;
    REQUIRE_FALSE(parse(R"({"op":"get","key":"a","extra":[1,{"b":null}]})", req));
    CHECK(req.key == "a");
}

TEST_CASE("integer ids of any sign and size are echoed as given", "[protocol]") {
    Request req;
    REQUIRE_FALSE(parse(R"({"op":"ping","id":-5})", req));
    CHECK(req.id_json == "-5");
    REQUIRE_FALSE(parse(R"({"op":"ping","id":18446744073709551615})", req));
    CHECK(req.id_json == "18446744073709551615");
}

TEST_CASE("parse_error for anything that is not JSON", "[protocol]") {
    CHECK(code_of("hello") == ErrorCode::ParseError);
    CHECK(code_of("{\"op\":") == ErrorCode::ParseError);
    CHECK(code_of(std::string_view("{\"op\":\"get\",\"key\":\"a\0\"}", 22)) ==
          ErrorCode::ParseError);
    CHECK(code_of("{\"op\":\"get\",\"key\":\"\xff\xfe\"}") == ErrorCode::ParseError);
    CHECK(code_of(R"({"op":"get"} trailing)") == ErrorCode::ParseError);
}

TEST_CASE("a NUL byte anywhere in a line is parse_error on both paths", "[protocol]") {
    using namespace std::string_literals;
    const std::string lines[] = {
        "{\"op\":\"failure\",\"key\":\"a\"}\0junk"s,              // after a valid object
        "{\"op\":\"failure\",\"key\":\"a\"}\0"s,                  // as the last byte
        "\0{\"op\":\"failure\",\"key\":\"a\"}"s,                  // before it
        "{\"op\":\"failure\",\0\"key\":\"a\"}"s,                  // between fields
        "{\"op\":\"failure\",\"key\":\"a\"} \0 "s,                // amid trailing whitespace
        "{\"op\":\"failure\",\"key\":\"a\"}\0\r"s,                // before a CR
        "{\"op\":\"configure\",\"key\":\"a\",\"policy\":{}}\0x"s, // a DOM-only op
    };
    for (const auto& line : lines) {
        INFO("line of " << line.size() << " bytes, NUL at " << line.find('\0'));
        Request req;
        CHECK_FALSE(parse_request_flat(line, req));
        auto dom = parse_request_dom(line, req);
        REQUIRE(dom);
        CHECK(dom->code == ErrorCode::ParseError);
        CHECK(dom->message.find("NUL") != std::string::npos);
        auto err = parse_request(line, req);
        REQUIRE(err);
        CHECK(err->code == ErrorCode::ParseError);
    }
}

TEST_CASE("invalid_request for the wrong shape", "[protocol]") {
    CHECK(code_of("[1,2]") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"("op")") == ErrorCode::InvalidRequest);
    CHECK(code_of("42") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"key":"a"})") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":7})") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"get"})") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"get","key":5})") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"transition","key":"a"})") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"transition","key":"a","to":1})") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"ping","id":{"a":1}})") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"ping","id":1.5})") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"ping","id":true})") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"ping","id":")" + std::string(257, 'x') + "\"}") ==
          ErrorCode::InvalidRequest);
}

TEST_CASE("a 256-byte string id is accepted", "[protocol]") {
    Request req;
    CHECK_FALSE(parse(R"({"op":"ping","id":")" + std::string(256, 'x') + "\"}", req));
}

TEST_CASE("nesting is limited to 16 levels before any parsing", "[protocol]") {
    auto nested = [](int depth) {
        std::string s = R"({"op":"ping","x":)";
        s += std::string(static_cast<std::size_t>(depth - 1), '[');
        s += std::string(static_cast<std::size_t>(depth - 1), ']');
        return s + "}";
    };
    Request req;
    CHECK_FALSE(parse(nested(16), req));
    CHECK(code_of(nested(17)) == ErrorCode::InvalidRequest);
    CHECK(code_of(std::string(60000, '[')) == ErrorCode::InvalidRequest);
    // Brackets inside strings do not count, escaped quotes do not end strings.
    CHECK_FALSE(parse(R"({"op":"ping","x":"[[[[[[[[[[[[[[[[[[[[\"[[[["})", req));
}

TEST_CASE("unknown_op names the op", "[protocol]") {
    Request req;
    auto err = parse(R"({"op":"explode","id":3})", req);
    REQUIRE(err);
    CHECK(err->code == ErrorCode::UnknownOp);
    CHECK(err->message.find("explode") != std::string::npos);
    CHECK(req.id_json == "3"); // so the error reply can echo it
}

TEST_CASE("invalid_key: empty, too long, control characters", "[protocol]") {
    CHECK(code_of(R"({"op":"get","key":""})") == ErrorCode::InvalidKey);
    CHECK(code_of(R"({"op":"get","key":")" + std::string(1025, 'k') + "\"}") ==
          ErrorCode::InvalidKey);
    CHECK(code_of(R"({"op":"get","key":"a\u0001b"})") == ErrorCode::InvalidKey);
    CHECK(code_of(R"({"op":"get","key":"a\nb"})") == ErrorCode::InvalidKey);
    CHECK(code_of(R"({"op":"get","key":"a\u007fb"})") == ErrorCode::InvalidKey);
    Request req;
    CHECK_FALSE(parse(R"({"op":"get","key":")" + std::string(1024, 'k') + "\"}", req));
    CHECK_FALSE(parse(R"({"op":"get","key":"payments/eu-west ü"})", req));
}

TEST_CASE("invalid_state for a 'to' that is not a state", "[protocol]") {
    CHECK(code_of(R"({"op":"transition","key":"a","to":"half_open"})") == ErrorCode::InvalidState);
    CHECK(code_of(R"({"op":"transition","key":"a","to":"OPEN"})") == ErrorCode::InvalidState);
}

TEST_CASE("blank lines are recognised", "[protocol]") {
    CHECK(is_blank_line(""));
    CHECK(is_blank_line(" \t\r"));
    CHECK_FALSE(is_blank_line(" x "));
}

TEST_CASE("breaker fields are parsed for the ops that read them", "[protocol]") {
    Request req;
    REQUIRE_FALSE(parse(
        R"({"op":"report","key":"k","outcome":"failure","generation":12,"permit":"ab12"})", req));
    CHECK(req.outcome == Outcome::Failure);
    CHECK(req.generation == 12u);
    CHECK(req.permit == "ab12");

    REQUIRE_FALSE(
        parse(R"({"op":"transition","key":"k","to":"open","expect":"closed","expectGeneration":3})",
              req));
    CHECK(req.expect == State::Closed);
    CHECK(req.expect_generation == 3u);

    REQUIRE_FALSE(parse(
        R"({"op":"force","key":"k","state":"open","ttlMs":60000,"reason":"db migration"})", req));
    CHECK(req.state == State::Open);
    CHECK(req.ttl_ms == 60000);
    CHECK(req.reason == "db migration");

    REQUIRE_FALSE(parse(
        R"({"op":"configure","key":"k","policy":{"failureThreshold":3,"halfOpenMax":null}})", req));
    CHECK(req.policy[PolicyField::FailureThreshold] == 3);
    CHECK(req.policy_removed[PolicyField::HalfOpenMax]);
    CHECK_FALSE(req.policy_clear);

    REQUIRE_FALSE(parse(R"({"op":"configure","key":"k","policy":null})", req));
    CHECK(req.policy_clear);

    // Fields an op does not read are ignored like any unknown field.
    REQUIRE_FALSE(parse(R"({"op":"get","key":"k","generation":"not a number"})", req));
}

TEST_CASE("breaker fields are validated", "[protocol]") {
    CHECK(code_of(R"({"op":"report","key":"k"})") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"report","key":"k","outcome":"maybe"})") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"report","key":"k","outcome":"success","generation":-1})") ==
          ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"report","key":"k","outcome":"success","generation":1.5})") ==
          ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"report","key":"k","outcome":"success","permit":7})") ==
          ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"report","key":"k","outcome":"success","permit":")" +
                  std::string(65, 'p') + "\"}") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"transition","key":"k","to":"open","expect":"shut"})") ==
          ErrorCode::InvalidState);
    CHECK(code_of(R"({"op":"transition","key":"k","to":"open","expectGeneration":"1"})") ==
          ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"force","key":"k"})") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"force","key":"k","state":"half-open"})") == ErrorCode::InvalidState);
    CHECK(code_of(R"({"op":"force","key":"k","state":"open","ttlMs":0})") ==
          ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"force","key":"k","state":"open","reason":"a\nb"})") ==
          ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"force","key":"k","state":"open","reason":")" + std::string(257, 'r') +
                  "\"}") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"configure","key":"k"})") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"configure","key":"k","policy":[]})") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"acquire","key":""})") == ErrorCode::InvalidKey);
    CHECK(code_of(R"({"op":"policy"})") == ErrorCode::InvalidRequest);
}

TEST_CASE("configure names the offending policy field", "[protocol]") {
    Request req;
    for (const char* line : {R"({"op":"configure","key":"k","policy":{"failureThreshold":0}})",
                             R"({"op":"configure","key":"k","policy":{"failureThreshold":-3}})",
                             R"({"op":"configure","key":"k","policy":{"failureThreshold":2.5}})",
                             R"({"op":"configure","key":"k","policy":{"failureThreshold":"3"}})"}) {
        auto err = parse(line, req);
        REQUIRE(err);
        CHECK(err->code == ErrorCode::InvalidRequest);
        CHECK(err->message.find("failureThreshold") != std::string::npos);
    }
}

TEST_CASE("the flat fast path accepts the hot shapes and agrees with the DOM parser",
          "[protocol]") {
    const char* accepted[] = {
        R"({"op":"get","key":"api"})",
        R"({"op":"failure","key":"api-12","id":7})",
        R"({ "op" : "success" , "key" : "a b/c" , "id" : "x-1" })",
        R"({"id":-42,"op":"acquire","key":"k"})",
        R"({"op":"report","key":"k","outcome":"failure","generation":12,"permit":"00ff00ff00ff00ff"})",
        R"({"op":"transition","key":"k","to":"half-open","expect":"open","expectGeneration":0})",
        R"({"op":"reset","key":"k"})",
        R"({"op":"ping"})",
        "{\"op\":\"get\",\"key\":\"k\"}\r",
    };
    for (const char* line : accepted) {
        INFO(line);
        Request flat, dom;
        REQUIRE(parse_request_flat(line, flat));
        REQUIRE_FALSE(parse_request_dom(line, dom));
        CHECK(flat == dom);
    }
    // Everything else is left to the DOM parser, which alone writes errors.
    const char* declined[] = {
        R"({"op":"get","key":""})",                  // invalid key
        R"({"op":"get","key":"a\"b"})",              // an escape
        "{\"op\":\"get\",\"key\":\"\xc3\xbc\"}",     // non-ASCII
        R"({"op":"get","key":"k","extra":1})",       // a field get does not read
        R"({"op":"get","key":"k","key":"j"})",       // a duplicate
        R"({"op":"ping","id":007})",                 // not JSON
        R"({"op":"ping","id":-0})",                  // not canonical
        R"({"op":"ping","id":1234567890123456789})", // too long for the fast path
        R"({"op":"list"})",                          // not a hot op
        R"({"op":"report","key":"k","outcome":"maybe"})",
        R"({"op":"report","key":"k","outcome":"success","generation":-1})",
        R"({"op":"transition","key":"k"})", // missing 'to'
        R"({"op":"get","key":"k"} x)",
        R"([{"op":"get"}])",
        R"({"op":"ping","id":")"
        "0123456789012345678901234567890123456789012345678901234567890123456789"
        "0123456789012345678901234567890123456789012345678901234567890123456789"
        "0123456789012345678901234567890123456789012345678901234567890123456789"
        "0123456789012345678901234567890123456789"
        R"("})", // a 250-byte id is fine...
    };
    for (const char* line : declined) {
        INFO(line);
        Request flat;
        const bool took = parse_request_flat(line, flat);
        if (took) { // ...so the last one may be taken, and must then agree
            Request dom;
            REQUIRE_FALSE(parse_request_dom(line, dom));
            CHECK(flat == dom);
        }
    }
    Request r;
    CHECK_FALSE(parse_request_flat(R"({"op":"get","key":""})", r));
    CHECK_FALSE(parse_request_flat(R"({"op":"ping","id":-0})", r));
    CHECK_FALSE(parse_request_flat(R"({"op":"list"})", r));
}

namespace {

// The error for `line`, which must be invalid_request naming `field`.
void check_out_of_range(const std::string& line, std::string_view field) {
    INFO(line);
    Request req;
    auto err = parse_request(line, req);
    REQUIRE(err);
    CHECK(err->code == ErrorCode::InvalidRequest);
    CHECK(err->message.find(field) != std::string::npos);
    // The fast path never takes what the DOM path refuses.
    Request flat;
    CHECK_FALSE(parse_request_flat(line, flat));
}

const std::string kImportHead =
    R"({"op":"import","key":"k","snapshot":{"state":"open","failureCount":1,"successCount":0,)"
    R"("lastFailureTime":5,"lastStateChange":5},)";

} // namespace

TEST_CASE("generations, counts and times stop at 2^53-1 on every protocol field", "[protocol]") {
    const std::string max = "9007199254740991"; // 2^53-1
    const std::string over = "9007199254740992";
    const std::string u64 = "18446744073709551615";
    const std::string big18 = "999999999999999999"; // short enough for the flat scanner

    // The largest one is taken, by both paths where the op is a hot one.
    Request req;
    REQUIRE_FALSE(
        parse(R"({"op":"report","key":"k","outcome":"success","generation":)" + max + "}", req));
    CHECK(req.generation == 9007199254740991ULL);
    Request flat;
    REQUIRE(parse_request_flat(
        R"({"op":"report","key":"k","outcome":"success","generation":)" + max + "}", flat));
    CHECK(flat == req);
    REQUIRE_FALSE(parse(kImportHead + R"("generation":)" + max + "}", req));
    CHECK(req.generation == 9007199254740991ULL);

    for (const auto& n : {over, u64, big18}) {
        check_out_of_range(R"({"op":"report","key":"k","outcome":"success","generation":)" + n +
                               "}",
                           "'generation'");
        check_out_of_range(R"({"op":"transition","key":"k","to":"open","expectGeneration":)" + n +
                               "}",
                           "'expectGeneration'");
        check_out_of_range(kImportHead + R"("generation":)" + n + "}", "'generation'");
        for (const char* field :
             {"failureCount", "successCount", "lastFailureTime", "lastStateChange"}) {
            std::string snapshot =
                R"({"state":"open","failureCount":1,"successCount":0,"lastFailureTime":5,"lastStateChange":5})";
            const std::string needle = std::string("\"") + field + "\":";
            const auto at = snapshot.find(needle) + needle.size();
            snapshot.replace(at, snapshot.find_first_of(",}", at) - at, n);
            check_out_of_range(R"({"op":"import","key":"k","snapshot":)" + snapshot +
                                   R"(,"generation":1})",
                               std::string("snapshot.") + field);
        }
        check_out_of_range(kImportHead + R"("generation":1,"forced":{"state":"open","until":)" + n +
                               "}}",
                           "forced.until");
        check_out_of_range(R"({"op":"configure","key":"k","policy":{"resetTimeoutMs":)" + n + "}}",
                           "resetTimeoutMs");
        check_out_of_range(R"({"op":"import","key":"k","policy":{"halfOpenMax":)" + n + "}}",
                           "halfOpenMax");
        check_out_of_range(R"({"op":"force","key":"k","state":"open","ttlMs":)" + n + "}", "ttlMs");
    }
    check_out_of_range(kImportHead +
                           R"("generation":1,"forced":{"state":"open","by":{"uid":4294967296}}})",
                       "forced.by.uid");
    check_out_of_range(kImportHead +
                           R"("generation":1,"forced":{"state":"open","by":{"pid":2147483648}}})",
                       "forced.by.pid");
    check_out_of_range(kImportHead + R"("generation":1,"forced":{"state":"open","by":{"pid":-1}}})",
                       "forced.by.pid");
    check_out_of_range(R"({"op":"list","limit":)" + u64 + "}", "'limit'");

    // Policy values: 2^53-1 is the largest.
    REQUIRE_FALSE(
        parse(R"({"op":"configure","key":"k","policy":{"resetTimeoutMs":)" + max + "}}", req));
    CHECK(req.policy[PolicyField::ResetTimeoutMs] == 9007199254740991LL);
}

TEST_CASE("reportBatch: entries parse as reports, each with its own error", "[protocol]") {
    Request req;
    REQUIRE_FALSE(parse(R"({"op":"reportBatch","id":3,"reports":[)"
                        R"({"key":"a","outcome":"failure","generation":7,"durationMs":12},)"
                        R"({"key":"b","outcome":"ignored","permit":"p1"},)"
                        R"(4,{"key":"","outcome":"success"},{"key":"a","outcome":"odd"},)"
                        R"({"key":"a"},{"key":"a","outcome":"success","durationMs":86400001}]})",
                        req));
    CHECK(req.op == Op::ReportBatch);
    CHECK(req.id_json == "3");
    REQUIRE(req.reports.size() == 7);
    CHECK(req.reports[0].key == "a");
    CHECK(req.reports[0].outcome == Outcome::Failure);
    CHECK(req.reports[0].generation == 7u);
    CHECK(req.reports[0].duration_ms == 12);
    CHECK_FALSE(req.reports[0].error);
    CHECK(req.reports[1].outcome == Outcome::Ignored);
    CHECK(req.reports[1].permit == "p1");
    CHECK_FALSE(req.reports[1].generation);
    CHECK_FALSE(req.reports[1].error);
    REQUIRE(req.reports[2].error);
    CHECK(req.reports[2].error->code == ErrorCode::InvalidRequest);
    REQUIRE(req.reports[3].error);
    CHECK(req.reports[3].error->code == ErrorCode::InvalidKey);
    REQUIRE(req.reports[4].error);
    CHECK(req.reports[4].error->code == ErrorCode::InvalidRequest);
    REQUIRE(req.reports[5].error);
    CHECK(req.reports[5].error->message == "missing field 'outcome'");
    REQUIRE(req.reports[6].error);
    CHECK(req.reports[6].error->message.find("durationMs") != std::string::npos);
}

TEST_CASE("reportBatch: the array itself is bounded", "[protocol]") {
    CHECK(code_of(R"({"op":"reportBatch"})") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"reportBatch","reports":[]})") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"reportBatch","reports":{}})") == ErrorCode::InvalidRequest);
    auto batch_of = [](std::size_t n) {
        std::string line = R"({"op":"reportBatch","reports":[)";
        for (std::size_t i = 0; i < n; ++i)
            line += std::string(i ? "," : "") + R"({"key":"k","outcome":"success"})";
        return line + "]}";
    };
    Request req;
    CHECK_FALSE(parse(batch_of(kMaxReportBatch), req));
    CHECK(req.reports.size() == kMaxReportBatch);
    CHECK(code_of(batch_of(kMaxReportBatch + 1)) == ErrorCode::InvalidRequest);
}

TEST_CASE("watch with a key set: sorted, deduplicated, bounded, alone", "[protocol]") {
    Request req;
    REQUIRE_FALSE(parse(R"({"op":"watch","keys":["b","a","b"]})", req));
    CHECK(req.watch_keys == std::vector<std::string>{"a", "b"});
    CHECK(code_of(R"({"op":"watch","keys":[]})") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"watch","keys":[1]})") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"watch","keys":["a",""]})") == ErrorCode::InvalidKey);
    CHECK(code_of(R"({"op":"watch","keys":["a"],"key":"a"})") == ErrorCode::InvalidRequest);
    CHECK(code_of(R"({"op":"watch","keys":["a"],"prefix":"a"})") == ErrorCode::InvalidRequest);
    std::string many = R"({"op":"watch","keys":[)";
    for (std::size_t i = 0; i <= kMaxWatchKeys; ++i)
        many += std::string(i ? "," : "") + "\"k" + std::to_string(i) + "\"";
    CHECK(code_of(many + "]}") == ErrorCode::InvalidRequest);
}
