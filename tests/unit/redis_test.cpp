// The Redis backend's pure parts: addresses and the script key layout.
#include "daemon/redis_connection.hpp"
#include "daemon/redis_scripts.hpp"

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

TEST_CASE("every script's keys sit under the prefix, as docs/REDIS.md lays them out", "[redis]") {
    auto keys = cbd::redis_script_keys("blue:", "payments/eu");
    CHECK(keys[0] == "blue:c:payments/eu");
    CHECK(keys[1] == "blue:probes:payments/eu");
    CHECK(keys[2] == "blue:generation");
    CHECK(keys[3] == "blue:policy:payments/eu");
    CHECK(keys[4] == "blue:events");
    CHECK(keys[5] == "blue:index");
    for (std::size_t i = 0; i < cbd::kRedisScriptCount; ++i) {
        const auto& src = cbd::redis_script_source(static_cast<cbd::RedisScript>(i));
        CHECK(src.find("redis.call('TIME')") != std::string::npos); // one clock: Redis's
        CHECK(src.find("return") != std::string::npos);
    }
}
