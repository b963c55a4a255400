// The Redis backend's pure parts: addresses, the key layout, the Functions
// library's text, error replies, and the send queue.
#include "daemon/backends/redis/redis_connection.hpp"
#include "daemon/backends/redis/redis_functions.hpp"

#include <catch2/catch.hpp>

TEST_CASE("Redis addresses: unix and tcp, or a clear refusal", "[redis]") {
    cbd::RedisEndpoint e;
    CHECK_FALSE(cbd::RedisEndpoint::parse("unix:///run/redis/redis.sock", e));
    CHECK(e.unix_path == "/run/redis/redis.sock");
    CHECK(e.describe() == "unix:///run/redis/redis.sock");
    CHECK_FALSE(cbd::RedisEndpoint::parse("tcp://127.0.0.1:6380", e));
    CHECK((e.host == "127.0.0.1" && e.port == 6380));
    CHECK_FALSE(cbd::RedisEndpoint::parse("tcp://localhost:6379", e));
    CHECK(e.host == "127.0.0.1");
    CHECK(cbd::RedisEndpoint::parse("unix://relative.sock", e));
    CHECK(cbd::RedisEndpoint::parse("tcp://127.0.0.1", e));
    CHECK(cbd::RedisEndpoint::parse("tcp://127.0.0.1:99999", e));
    CHECK(cbd::RedisEndpoint::parse("tcp://redis.example:6379", e)->find("not an IP") !=
          std::string::npos);
    CHECK(cbd::RedisEndpoint::parse("redis://x", e));
}

TEST_CASE("every function's keys sit under the prefix, as docs/REDIS.md lays them out", "[redis]") {
    auto keys = cbd::redis_function_keys("blue:", "payments/eu");
    CHECK(keys[0] == "blue:c:payments/eu");
    CHECK(keys[1] == "blue:probes:payments/eu");
    CHECK(keys[2] == "blue:generation");
    CHECK(keys[3] == "blue:policy:payments/eu");
    CHECK(keys[4] == "blue:events");
    CHECK(keys[5] == "blue:index");
    const auto& src = cbd::redis_library_source();
    CHECK(src.find("redis.call('TIME')") != std::string::npos); // one clock: Redis's
}

TEST_CASE("the library is named by its version, and so are its functions", "[redis]") {
    const auto& name = cbd::redis_library_name();
    REQUIRE(name.starts_with(cbd::kRedisLibraryPrefix));
    const auto digest = name.substr(cbd::kRedisLibraryPrefix.size());
    CHECK(digest.size() == 16);
    CHECK(digest.find_first_not_of("0123456789abcdef") == std::string::npos);
    const auto& src = cbd::redis_library_source();
    CHECK(src.starts_with("#!lua name=" + name + "\n"));
    CHECK(src.find("local FUNCTION_PREFIX = '" + name + "_'\n") != std::string::npos);
    CHECK(src.find(cbd::redis_function_constants()) != std::string::npos);
    CHECK(src.ends_with(cbd::redis_functions_lua()));
    CHECK(cbd::redis_function_name(cbd::RedisFunction::Failure) == name + "_failure");
    CHECK(cbd::redis_batch_function_name() == name + "_batch");
    // Every operation has its body in the Lua, under the name C++ calls.
    for (auto op : cbd::kRedisFunctionNames)
        CHECK(cbd::redis_functions_lua().find("\nops." + std::string(op) + " = function()") !=
              std::string::npos);
}

TEST_CASE("Redis versions: 7.0 or newer, read from INFO server", "[redis]") {
    CHECK(cbd::redis_version_of("# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:0\r\n") ==
          "7.0.15");
    CHECK(cbd::redis_version_of("# Server\r\n").empty());
    CHECK(cbd::redis_version_supported("7.0.15"));
    CHECK(cbd::redis_version_supported("7.2.4"));
    CHECK(cbd::redis_version_supported("10.0.0"));
    CHECK_FALSE(cbd::redis_version_supported("6.2.14"));
    CHECK_FALSE(cbd::redis_version_supported(""));
    CHECK_FALSE(cbd::redis_version_supported("x"));
}

#include "daemon/backends/redis/redis_store.hpp"

#include <regex>
#include <set>

namespace {

// The scripts' own text (prelude and bodies) with comments and string
// literals taken out, and the literals collected.
struct LuaText {
    std::string code;
    std::vector<std::string> literals;
};

LuaText split_lua(std::string_view src) {
    LuaText t;
    for (std::size_t i = 0; i < src.size(); ++i) {
        if (src.substr(i, 2) == "--") {
            while (i < src.size() && src[i] != '\n')
                ++i;
            t.code += '\n';
            continue;
        }
        if (src[i] == '\'' || src[i] == '"') {
            const char quote = src[i];
            const auto end = src.find(quote, i + 1);
            REQUIRE(end != std::string_view::npos);
            t.literals.emplace_back(src.substr(i + 1, end - i - 1));
            t.code += " _lit_ ";
            i = end;
            continue;
        }
        t.code += src[i];
    }
    return t;
}

std::set<std::string> generated_names() {
    std::set<std::string> names;
    const std::regex def(R"(^local ([A-Z][A-Z0-9_]*) = )");
    const auto& constants = cbd::redis_function_constants();
    std::size_t at = 0;
    while (at < constants.size()) {
        auto end = constants.find('\n', at);
        const std::string line = constants.substr(at, end - at);
        std::smatch m;
        if (std::regex_search(line, m, def))
            names.insert(m[1]);
        at = end == std::string::npos ? constants.size() : end + 1;
    }
    return names;
}

} // namespace

TEST_CASE("every constant the library uses comes from the generated constants", "[redis]") {
    auto names = generated_names();
    REQUIRE(names.count("MAX_INT"));
    names.insert("FUNCTION_PREFIX"); // laid before the constants, with the library's name
    std::vector<std::string_view> parts{cbd::redis_functions_lua()};

    // Redis command words and Lua's own patterns and type names are not
    // cbd's constants; prose (error text) holds a space.
    const std::set<std::string> syntax = {
        "",   "(",  "[",  "+",      "-inf",   "table", "string", "^0*(%d+)$",
        "%d", "%q", "%c", "^(%u+)", "%x%08x", ")",     "%D",     "^%u[%u_]* "};
    const std::regex upper_word(R"(^[A-Z]+$)");
    const std::regex identifier(R"(\b[A-Z][A-Z0-9_]+\b)");
    const std::regex number(R"((^|[^A-Za-z0-9_.])(\d+)\b)");
    for (auto part : parts) {
        const LuaText t = split_lua(part);
        for (const auto& lit : t.literals) {
            INFO("literal '" << lit << "'");
            CHECK((syntax.count(lit) || std::regex_match(lit, upper_word) ||
                   lit.find(' ') != std::string::npos));
        }
        for (std::sregex_iterator it(t.code.begin(), t.code.end(), identifier), end; it != end;
             ++it) {
            const std::string name = (*it)[0];
            INFO("identifier " << name);
            CHECK((names.count(name) || name == "KEYS" || name == "ARGV"));
        }
        // Indices and small offsets only; limits have names. 1000: TIME's
        // microseconds to milliseconds.
        for (std::sregex_iterator it(t.code.begin(), t.code.end(), number), end; it != end; ++it) {
            const std::string n = (*it)[2];
            INFO("number " << n);
            CHECK((n.size() == 1 || n == "1000"));
        }
    }
}

TEST_CASE("the generated prelude holds the C++ names and limits", "[redis]") {
    const auto& k = cbd::redis_function_constants();
    for (auto name : cbd::kPolicyFieldNames)
        CHECK(k.find("'" + std::string(name) + "'") != std::string::npos);
    for (auto name : cbd::kRedisCircuitFields)
        CHECK(k.find("'" + std::string(name) + "'") != std::string::npos);
    for (auto s : {cbd::State::Closed, cbd::State::Open, cbd::State::HalfOpen})
        CHECK(k.find("'" + std::string(cbd::state_name(s)) + "'") != std::string::npos);
    for (std::size_t i = 0; i < cbd::kTransitionCauseCount; ++i)
        CHECK(k.find("'" +
                     std::string(cbd::transition_cause_name(static_cast<cbd::TransitionCause>(i))) +
                     "'") != std::string::npos);
    CHECK(k.find("local MAX_INT = 9007199254740991\n") != std::string::npos);
    CHECK(k.find("local MAX_POLICY = " + std::to_string(cbd::kMaxPolicyValue) + "\n") !=
          std::string::npos);
    CHECK(k.find("local SCAN_PER_CALL = " + std::to_string(cbd::kRedisScanPerCall) + "\n") !=
          std::string::npos);
    for (auto op : cbd::kRedisFunctionNames)
        CHECK(k.find("'" + std::string(op) + "'") != std::string::npos);
}

TEST_CASE("Redis error replies: reload, limit, outage or bad data", "[redis]") {
    using cbd::RedisErrorKind;
    CHECK(cbd::classify_redis_error("ERR Function not found") == RedisErrorKind::NoFunction);
    CHECK(cbd::classify_redis_error("NOSCRIPT No matching script. Please use EVAL.") ==
          RedisErrorKind::NoFunction);
    CHECK(cbd::classify_redis_error("TOO_MANY_CIRCUITS the shared store holds ...") ==
          RedisErrorKind::TooMany);
    CHECK(cbd::classify_redis_error("WRONGTYPE Operation against a key") == RedisErrorKind::Data);
    CHECK(cbd::classify_redis_error("CBD_BACKEND_ERROR Redis key x field y holds") ==
          RedisErrorKind::Data);
    CHECK(cbd::classify_redis_error("ERR user_script:1: attempt to index") == RedisErrorKind::Data);
    for (auto outage :
         {"LOADING Redis is loading the dataset in memory", "BUSY Redis is busy running a script",
          "READONLY You can't write", "MASTERDOWN Link with MASTER is down",
          "OOM command not allowed", "NOAUTH Authentication required."})
        CHECK(cbd::classify_redis_error(outage) == RedisErrorKind::Outage);
    CHECK(cbd::redis_error_text("CBD_BACKEND_ERROR Redis key cbd:c:k field sc holds \"-5\", not "
                                "an integer script: 70ec2f28, on @user_script:1.") ==
          "Redis key cbd:c:k field sc holds \"-5\", not an integer");
    CHECK(cbd::redis_error_text("WRONGTYPE Operation against a key holding the wrong kind of "
                                "value") ==
          "WRONGTYPE Operation against a key holding the wrong kind of value");
}

TEST_CASE("the lease is derived on Redis as PolicySet derives it", "[redis]") {
    cbd::PolicySet set;
    cbd::PolicyConfig config;
    config.defaults[cbd::PolicyField::ResetTimeoutMs] = 2000;
    set.set_config(config);
    const cbd::ResolvedPolicy daemon = set.resolve("svc");
    REQUIRE(daemon.policy.probe_lease_ms() == 2000);

    // No layer sets the lease: the script is told (0) and derives it.
    CHECK(cbd::redis_policy_numbers(daemon).probe_lease_ms() == 0);
    cbd::PolicySet leased;
    cbd::PolicyConfig leased_config = config;
    leased_config.defaults[cbd::PolicyField::ProbeLeaseMs] = 2000;
    leased.set_config(leased_config);
    CHECK(cbd::redis_policy_numbers(leased.resolve("svc")).probe_lease_ms() == 2000);

    // What the policy reply shows on Redis: the key's override from Redis
    // over the daemon's layers, through PolicySet's own resolution.
    cbd::PolicyPatch own;
    own[cbd::PolicyField::ResetTimeoutMs] = 600;
    auto shown = set.resolve_with("svc", &own);
    CHECK(shown.policy.reset_timeout_ms() == 600);
    CHECK(shown.policy.probe_lease_ms() == 600);
    CHECK(shown.sources[static_cast<std::size_t>(cbd::PolicyField::ProbeLeaseMs)] ==
          cbd::PolicySource::Key);

    // The same as memory, where the override lives in the PolicySet.
    set.set_key_override("svc", own);
    const auto memory = set.resolve("svc");
    CHECK(memory.policy.probe_lease_ms() == shown.policy.probe_lease_ms());
    CHECK(memory.sources == shown.sources);

    // A lease some layer sets stays.
    shown = leased.resolve_with("svc", &own);
    CHECK(shown.policy.probe_lease_ms() == 2000);
    own[cbd::PolicyField::ProbeLeaseMs] = 50;
    CHECK(set.resolve_with("svc", &own).policy.probe_lease_ms() == 50);
}

#include "daemon/backends/redis/redis_send_queue.hpp"

namespace {
using Queue = cbd::RedisSendQueue<int>;
using Clock = Queue::Clock;
const Clock::time_point t0{};
constexpr auto later = std::chrono::seconds(1);

std::vector<int> pop_all(Queue& q, bool reads_allowed = true) {
    std::vector<int> out;
    while (auto e = q.pop(reads_allowed))
        out.push_back(e->item);
    return out;
}
} // namespace

TEST_CASE("send queue: first in, first out per connection, round robin between them",
          "[redis][queue]") {
    Queue q(100);
    for (int i = 0; i < 3; ++i)
        REQUIRE(q.push(1, false, t0 + later, 10 + i) == Queue::Admission::Queued);
    REQUIRE(q.push(2, false, t0 + later, 20) == Queue::Admission::Queued);
    REQUIRE(q.push(3, true, t0 + later, 30) == Queue::Admission::Queued);
    CHECK(q.size() == 5);
    CHECK(q.reads() == 1);
    CHECK(q.sources() == 3);
    // One from each connection in turn: a connection that queued 1000 calls
    // does not hold back one that queued one.
    CHECK(pop_all(q) == std::vector<int>{10, 20, 30, 11, 12});
    CHECK(q.empty());
}

TEST_CASE("send queue: reads hold at most half of it, and wait while reads may not go",
          "[redis][queue]") {
    Queue q(8);
    for (int i = 0; i < 4; ++i)
        CHECK(q.push(1, true, t0 + later, i) == Queue::Admission::Queued);
    CHECK(q.push(2, true, t0 + later, 99) == Queue::Admission::ReadsFull);
    for (int i = 0; i < 4; ++i)
        CHECK(q.push(3, false, t0 + later, 100 + i) == Queue::Admission::Queued);
    CHECK(q.push(3, false, t0 + later, 104) == Queue::Admission::Full);
    // Reads may not go: the writer's calls still do, the reader's wait.
    CHECK(pop_all(q, false) == std::vector<int>{100, 101, 102, 103});
    CHECK(q.size() == 4);
    CHECK(pop_all(q, true) == std::vector<int>{0, 1, 2, 3});
}

TEST_CASE("send queue: a connection's order holds behind a read that may not go",
          "[redis][queue]") {
    Queue q(100);
    q.push(1, true, t0 + later, 1);
    q.push(1, false, t0 + later, 2); // waits behind the read, never overtakes it
    q.push(2, false, t0 + later, 3);
    CHECK(pop_all(q, false) == std::vector<int>{3});
    CHECK(pop_all(q, true) == std::vector<int>{1, 2});
}

TEST_CASE("send queue: each call leaves unsent at its own deadline", "[redis][queue]") {
    Queue q(100);
    q.push(1, false, t0 + std::chrono::milliseconds(100), 1);
    q.push(1, false, t0 + std::chrono::milliseconds(300), 2);
    q.push(2, true, t0 + std::chrono::milliseconds(200), 3);
    CHECK(q.earliest_deadline() == t0 + std::chrono::milliseconds(100));
    std::vector<int> expired;
    auto collect = [&](Queue::Entry e) { expired.push_back(e.item); };
    q.expire(t0 + std::chrono::milliseconds(99), collect);
    CHECK(expired.empty());
    q.expire(t0 + std::chrono::milliseconds(200), collect);
    CHECK(expired == std::vector<int>{1, 3});
    CHECK(q.size() == 1);
    CHECK(q.reads() == 0);
    CHECK(q.sources() == 1);
    CHECK(q.earliest_deadline() == t0 + std::chrono::milliseconds(300));
    CHECK(pop_all(q) == std::vector<int>{2});
    CHECK_FALSE(q.earliest_deadline());
    q.push(4, false, t0, 5);
    std::vector<int> drained;
    q.drain([&](Queue::Entry e) { drained.push_back(e.item); });
    CHECK(drained == std::vector<int>{5});
    CHECK(q.empty());
}
