// Redis Sentinel's pure parts: the sentinel:// address, what sentinels and
// ROLE answer (real hiredis replies, parsed from the bytes a server would
// send), choosing the next sentinel, deciding to switch, and which scripts
// wait for replicas.
#include "daemon/backends/redis/redis_sentinel.hpp"
#include "daemon/backends/redis/redis_store.hpp"

#include <catch2/catch.hpp>
#include <hiredis/hiredis.h>
#include <memory>

namespace {

// A reply as hiredis parses `resp`; freed with the holder.
struct Reply {
    redisReply* r = nullptr;
    explicit Reply(const std::string& resp) {
        redisReader* reader = redisReaderCreate();
        redisReaderFeed(reader, resp.data(), resp.size());
        void* out = nullptr;
        REQUIRE(redisReaderGetReply(reader, &out) == REDIS_OK);
        REQUIRE(out != nullptr);
        r = static_cast<redisReply*>(out);
        redisReaderFree(reader);
    }
    ~Reply() { freeReplyObject(r); }
    Reply(const Reply&) = delete;
    Reply& operator=(const Reply&) = delete;
};

std::string bulk(const std::string& s) {
    return "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n";
}

std::string array(std::initializer_list<std::string> items) {
    std::string out = "*" + std::to_string(items.size()) + "\r\n";
    for (const auto& i : items)
        out += i;
    return out;
}

} // namespace

TEST_CASE("sentinel:// addresses: sentinels and a master name, or a clear refusal", "[sentinel]") {
    cbd::SentinelAddress a;
    REQUIRE_FALSE(cbd::SentinelAddress::parse(
        "sentinel://10.0.0.1:26379,10.0.0.2:26380,localhost:26381/payments", a));
    REQUIRE(a.sentinels.size() == 3);
    CHECK((a.sentinels[0].host == "10.0.0.1" && a.sentinels[0].port == 26379));
    CHECK((a.sentinels[1].host == "10.0.0.2" && a.sentinels[1].port == 26380));
    CHECK(a.sentinels[2].host == "127.0.0.1");
    CHECK(a.master_name == "payments");
    CHECK(a.describe() == "sentinel://10.0.0.1:26379,10.0.0.2:26380,127.0.0.1:26381/payments");
    REQUIRE_FALSE(cbd::SentinelAddress::parse("sentinel://::1:26379/m", a));
    CHECK(a.sentinels[0].host == "::1");

    auto refused = [](const std::string& url) {
        cbd::SentinelAddress out;
        auto error = cbd::SentinelAddress::parse(url, out);
        REQUIRE(error);
        return *error;
    };
    CHECK(refused("tcp://10.0.0.1:26379/m").find("sentinel://") != std::string::npos);
    CHECK(refused("sentinel://10.0.0.1:26379").find("MASTERNAME") != std::string::npos);
    CHECK(refused("sentinel://10.0.0.1:26379/").find("not a master name") != std::string::npos);
    CHECK(refused("sentinel://10.0.0.1:26379/a b").find("not a master name") != std::string::npos);
    CHECK(refused("sentinel://10.0.0.1:26379/" + std::string(129, 'm')).find("not a master") !=
          std::string::npos);
    CHECK(refused("sentinel:///m").find("empty sentinel") != std::string::npos);
    CHECK(refused("sentinel://10.0.0.1:26379,/m").find("empty sentinel") != std::string::npos);
    CHECK(refused("sentinel://sentinel.example:26379/m").find("not an IP") != std::string::npos);
    CHECK(refused("sentinel://10.0.0.1/m").find("host and a port") != std::string::npos);
    CHECK(refused("sentinel://10.0.0.1:0/m").find("not a port") != std::string::npos);
    CHECK(refused("sentinel://10.0.0.1:1,10.0.0.1:1/m").find("twice") != std::string::npos);
    std::string many = "sentinel://";
    for (int i = 0; i < 17; ++i)
        many += (i ? "," : "") + std::string("10.0.0.1:") + std::to_string(1000 + i);
    CHECK(refused(many + "/m").find("more than 16") != std::string::npos);
    many = "sentinel://";
    for (int i = 0; i < 16; ++i)
        many += (i ? "," : "") + std::string("10.0.0.1:") + std::to_string(1000 + i);
    CHECK_FALSE(cbd::SentinelAddress::parse(many + "/m", a));
    CHECK(a.sentinels.size() == 16);
}

TEST_CASE("a sentinel's master address is checked, never trusted", "[sentinel]") {
    std::string error;
    {
        Reply ok(array({bulk("10.0.0.7"), bulk("6380")}));
        auto master = cbd::master_from_sentinel_reply(ok.r, error);
        REQUIRE(master);
        CHECK(master->describe() == "tcp://10.0.0.7:6380");
    }
    auto refused = [&](const std::string& resp) {
        Reply bad(resp);
        error.clear();
        CHECK_FALSE(cbd::master_from_sentinel_reply(bad.r, error));
        CHECK_FALSE(error.empty());
        return error;
    };
    CHECK(refused("$-1\r\n").find("does not know") != std::string::npos);
    CHECK(refused("*-1\r\n").find("does not know") != std::string::npos);
    CHECK(refused("-ERR unknown command\r\n").find("ERR unknown") != std::string::npos);
    CHECK(refused(array({bulk("redis.example"), bulk("6379")})).find("not an IP and a port") !=
          std::string::npos);
    CHECK(refused(array({bulk("10.0.0.7"), bulk("99999")})).find("not an IP and a port") !=
          std::string::npos);
    CHECK(refused(array({bulk("10.0.0.7"), bulk("")})).find("not an IP and a port") !=
          std::string::npos);
    CHECK(refused(array({bulk("10.0.0.7")})).find("not an address") != std::string::npos);
    CHECK(refused(array({bulk("10.0.0.7"), ":6379\r\n"})).find("not an address") !=
          std::string::npos);
    CHECK(refused(":1\r\n").find("not an address") != std::string::npos);
    // Control bytes from a hostile sentinel do not reach the log raw.
    CHECK(refused(array({bulk("10.0.0.7\n\x1b[31m"), bulk("1")})).find('\n') == std::string::npos);
    CHECK(refused(array({bulk(std::string(1000, '1')), bulk("1")})).size() < 300);
    CHECK_FALSE(cbd::master_from_sentinel_reply(nullptr, error));
}

TEST_CASE("+switch-master: the new address for our master, nothing for others", "[sentinel]") {
    std::string error;
    auto message = [](const std::string& payload) {
        return array({bulk("message"), bulk("+switch-master"), bulk(payload)});
    };
    {
        Reply r(message("cbdtest 127.0.0.1 7001 127.0.0.1 7002"));
        auto master = cbd::master_from_switch_message(r.r, "cbdtest", error);
        REQUIRE(master);
        CHECK(master->describe() == "tcp://127.0.0.1:7002");
        CHECK(error.empty());
    }
    {
        Reply other(message("othermaster 127.0.0.1 7001 127.0.0.1 7002"));
        CHECK_FALSE(cbd::master_from_switch_message(other.r, "cbdtest", error));
        CHECK(error.empty());
        Reply prefix(message("cbdtest2 127.0.0.1 7001 127.0.0.1 7002"));
        CHECK_FALSE(cbd::master_from_switch_message(prefix.r, "cbdtest", error));
        CHECK(error.empty());
    }
    {
        Reply confirm(array({bulk("subscribe"), bulk("+switch-master"), ":1\r\n"}));
        CHECK_FALSE(cbd::master_from_switch_message(confirm.r, "cbdtest", error));
        CHECK(error.empty());
        Reply pong(array({bulk("pong"), bulk("")}));
        CHECK_FALSE(cbd::master_from_switch_message(pong.r, "cbdtest", error));
        CHECK(error.empty());
    }
    for (const char* bad : {"cbdtest 127.0.0.1 7001 127.0.0.1", "cbdtest 127.0.0.1 7001 host 7002",
                            "cbdtest 1 2 3 4 5 6", "cbdtest"}) {
        Reply r(message(bad));
        CHECK_FALSE(cbd::master_from_switch_message(r.r, "cbdtest", error));
        CHECK_FALSE(error.empty());
    }
    Reply huge(message("cbdtest " + std::string(600, 'x')));
    CHECK_FALSE(cbd::master_from_switch_message(huge.r, "cbdtest", error));
    CHECK(error.find("bytes") != std::string::npos);
}

TEST_CASE("ROLE: master, slave or sentinel; anything else is an error", "[sentinel]") {
    std::string error;
    Reply master(array({bulk("master"), ":0\r\n", "*0\r\n"}));
    CHECK(cbd::role_from_reply(master.r, error) == "master");
    Reply replica(
        array({bulk("slave"), bulk("127.0.0.1"), ":6379\r\n", bulk("connected"), ":10\r\n"}));
    CHECK(cbd::role_from_reply(replica.r, error) == "slave");
    Reply odd(array({bulk("leader")}));
    CHECK_FALSE(cbd::role_from_reply(odd.r, error));
    CHECK(error.find("leader") != std::string::npos);
    Reply notarray(bulk("master"));
    CHECK_FALSE(cbd::role_from_reply(notarray.r, error));
    Reply empty("*0\r\n");
    CHECK_FALSE(cbd::role_from_reply(empty.r, error));
}

TEST_CASE("sentinels are asked in turn, wrapping", "[sentinel]") {
    cbd::SentinelRotation r(3);
    CHECK(r.current() == 0);
    CHECK(r.advance() == 1);
    CHECK(r.advance() == 2);
    CHECK(r.advance() == 0);
    cbd::SentinelRotation one(1);
    CHECK(one.advance() == 0);
    cbd::SentinelRotation none(0);
    CHECK(none.advance() == 0);
}

TEST_CASE("switch when the sentinels name another master; count failovers", "[sentinel]") {
    cbd::MasterFollower f;
    cbd::RedisEndpoint a, b;
    REQUIRE_FALSE(cbd::RedisEndpoint::parse("tcp://10.0.0.1:6379", a));
    REQUIRE_FALSE(cbd::RedisEndpoint::parse("tcp://10.0.0.2:6379", b));
    CHECK(f.should_switch(a)); // nothing known yet
    f.switched(a);
    CHECK(f.failovers() == 0); // the first master is not a failover
    CHECK_FALSE(f.should_switch(a));
    CHECK(f.should_switch(b));
    f.switched(b);
    CHECK(f.failovers() == 1);
    CHECK(f.master()->describe() == "tcp://10.0.0.2:6379");
    cbd::RedisEndpoint other_port;
    REQUIRE_FALSE(cbd::RedisEndpoint::parse("tcp://10.0.0.2:6380", other_port));
    CHECK(f.should_switch(other_port));
}

TEST_CASE("which scripts wait for replicas (--redis-min-replicas)", "[sentinel]") {
    using cbd::RedisFunction;
    for (auto s : {RedisFunction::Success, RedisFunction::Failure, RedisFunction::Transition,
                   RedisFunction::Reset, RedisFunction::Acquire, RedisFunction::Report,
                   RedisFunction::Force, RedisFunction::Unforce, RedisFunction::Import})
        CHECK(cbd::redis_function_mutates(s, {}));
    for (auto s :
         {RedisFunction::Get, RedisFunction::List, RedisFunction::Sweep, RedisFunction::Export})
        CHECK_FALSE(cbd::redis_function_mutates(s, {}));
    // policy: clear flag, then per field "" keep, "-" remove, or a value.
    std::vector<std::string> read(1 + cbd::kPolicyFieldCount, "");
    read[0] = "0";
    CHECK_FALSE(cbd::redis_function_mutates(RedisFunction::Policy, read));
    auto clear = read;
    clear[0] = std::string(cbd::kRedisArgTrue);
    CHECK(cbd::redis_function_mutates(RedisFunction::Policy, clear));
    auto set = read;
    set[2] = "600";
    CHECK(cbd::redis_function_mutates(RedisFunction::Policy, set));
    auto removed = read;
    removed[5] = std::string(cbd::kRedisArgRemove);
    CHECK(cbd::redis_function_mutates(RedisFunction::Policy, removed));
}
