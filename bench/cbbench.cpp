// cbbench: drives cbd (or Redis, or the floor server) with C connections of
// P pipelined operations and prints throughput, latency percentiles and
// errors, in the manner of redis-benchmark.
#include "bench/load.hpp"
#include "common/socket_path.hpp"
#include "daemon/backends/redis/redis_functions.hpp"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <memory>

int main(int argc, char** argv) {
    using namespace cbbench;
    CLI::App app{"cbbench: load for cbd, and the same load for Redis or a floor server"};

    LoadOptions o;
    std::string socket_flag, op_text = "get", target = "cbd", redis_socket;
    bool json = false, sequential = false;
    app.add_option("--socket", socket_flag, "Server socket (cbd's default rule; the floor's path)");
    app.add_option("-c,--connections", o.connections, "Connections")
        ->capture_default_str()
        ->check(CLI::Range(1, 100000));
    app.add_option("-P,--pipeline", o.pipeline, "Operations in flight per connection")
        ->capture_default_str()
        ->check(CLI::Range(1, 10000));
    auto* dur = app.add_option("-d,--duration", o.seconds, "Seconds to run")
                    ->capture_default_str()
                    ->check(CLI::Range(0.1, 86400.0));
    app.add_option("-n,--requests", o.requests, "Operations to run (instead of a duration)")
        ->excludes(dur);
    app.add_option("--keys", o.keys, "Distinct keys (api-0 ...)")
        ->capture_default_str()
        ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 40));
    app.add_flag("--sequential-keys", sequential, "Touch the keys in order (to fill a store)");
    app.add_option("--op", op_text, "get|success|failure|acquire-report|mix:get=80,failure=20")
        ->capture_default_str();
    app.add_option(
           "--target", target,
           "cbd, redis, redis-incr (HINCRBY), redis-cbd (cbd's own Redis-backend scripts) or floor")
        ->capture_default_str()
        ->check(CLI::IsMember({"cbd", "redis", "redis-incr", "redis-cbd", "floor"}));
    app.add_option("--redis-socket", redis_socket, "Redis's Unix socket (targets redis*)");
    app.add_flag("--json", json, "One JSON object instead of text");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    }

    std::string error;
    auto mix = parse_op_mix(op_text, error);
    if (!mix) {
        std::cerr << "cbbench: " << error << "\n";
        return 2;
    }
    o.mix = *mix;
    o.sequential_keys = sequential;

    std::unique_ptr<Protocol> protocol;
    try {
        if (target == "redis" || target == "redis-incr" || target == "redis-cbd") {
            if (redis_socket.empty()) {
                std::cerr << "cbbench: --target " << target << " needs --redis-socket\n";
                return 2;
            }
            for (const auto& m : o.mix)
                if (m.op == OpKind::AcquireReport) {
                    std::cerr << "cbbench: acquire-report has no Redis equivalent\n";
                    return 2;
                }
            o.socket = redis_socket;
            if (target == "redis") {
                auto [failure_sha, success_sha] = load_redis_scripts(redis_socket);
                protocol = std::make_unique<RedisProtocol>(failure_sha, success_sha);
            } else if (target == "redis-cbd") {
                load_redis_library(redis_socket, cbd::redis_library_source());
                protocol = std::make_unique<RedisCbdFunctionProtocol>();
            } else {
                protocol = std::make_unique<RedisIncrProtocol>();
            }
        } else {
            o.socket = cbd::resolve_socket_path(socket_flag);
            protocol = std::make_unique<CbdProtocol>();
        }
        const LoadResult r = run_load(o, *protocol);
        const double rate = r.seconds > 0 ? static_cast<double>(r.ops) / r.seconds : 0;
        const auto& h = r.latency;
        if (json) {
            std::printf(
                "{\"target\":\"%s\",\"op\":\"%s\",\"connections\":%d,\"pipeline\":%d,"
                "\"ops\":%llu,\"errors\":%llu,\"seconds\":%.3f,\"opsPerSec\":%.0f,"
                "\"p50Us\":%.1f,\"p90Us\":%.1f,\"p99Us\":%.1f,\"p999Us\":%.1f,\"maxUs\":%.1f}\n",
                target.c_str(), op_text.c_str(), o.connections, o.pipeline,
                static_cast<unsigned long long>(r.ops), static_cast<unsigned long long>(r.errors),
                r.seconds, rate, h.percentile(0.5), h.percentile(0.9), h.percentile(0.99),
                h.percentile(0.999), h.max());
        } else {
            std::printf("%s %s: %d connections, pipeline %d\n", target.c_str(), op_text.c_str(),
                        o.connections, o.pipeline);
            std::printf("  %llu ops in %.2f s: %.0f ops/s, %llu errors\n",
                        static_cast<unsigned long long>(r.ops), r.seconds, rate,
                        static_cast<unsigned long long>(r.errors));
            std::printf("  latency µs: p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n",
                        h.percentile(0.5), h.percentile(0.9), h.percentile(0.99),
                        h.percentile(0.999), h.max());
        }
        return r.errors == 0 ? 0 : 1;
    } catch (const std::exception& e) {
        std::cerr << "cbbench: " << e.what() << "\n";
        return 3;
    }
}
