// What cbbench says to each kind of server, and how it reads the replies:
// cbd's and the floor's newline-delimited JSON, and Redis's RESP. A load
// generator (load.hpp) drives any of them with the same connection and
// pipelining logic, so that the numbers compare.
#pragma once

#include "common/policy.hpp"
#include "daemon/backends/redis/redis_functions.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cbbench {

enum class OpKind { Get, Success, Failure, AcquireReport };

// One operation kind with its share of a mix (weights sum to 100).
struct MixEntry {
    OpKind op;
    int weight;
};

// Parses "get", "failure", ..., "acquire-report", or "mix:get=80,failure=20".
std::optional<std::vector<MixEntry>> parse_op_mix(std::string_view text, std::string& error);

class Protocol {
  public:
    virtual ~Protocol() = default;
    // The request that starts an operation on key number `key`.
    virtual void first_request(OpKind op, std::uint64_t key, std::string& out) = 0;
    // For a two-step operation (acquire, then report): the follow-up request
    // built from the first reply; false when the operation is complete.
    virtual bool follow_up(OpKind op, std::uint64_t key, std::string_view reply,
                           std::string& out) = 0;
    // Bytes of the first complete reply in `data`; 0 when it is incomplete.
    virtual std::size_t reply_length(std::string_view data) = 0;
    virtual bool is_error(std::string_view reply) = 0;
};

// Key numbers become "api-<n>", as in the memory benchmark.
std::string key_name(std::uint64_t key);

class CbdProtocol final : public Protocol {
  public:
    void first_request(OpKind op, std::uint64_t key, std::string& out) override;
    bool follow_up(OpKind op, std::uint64_t key, std::string_view reply, std::string& out) override;
    std::size_t reply_length(std::string_view data) override;
    bool is_error(std::string_view reply) override;
};

// Redis doing the same work as Lua scripts called by EVALSHA; `get` is a plain
// HGETALL. The script hashes are loaded beforehand (load_redis_scripts).
class RedisProtocol final : public Protocol {
  public:
    RedisProtocol(std::string failure_sha, std::string success_sha);
    void first_request(OpKind op, std::uint64_t key, std::string& out) override;
    bool follow_up(OpKind op, std::uint64_t key, std::string_view reply, std::string& out) override;
    std::size_t reply_length(std::string_view data) override;
    bool is_error(std::string_view reply) override;

    // The scripts, as sent to SCRIPT LOAD.
    static const char* failure_script();
    static const char* success_script();

  private:
    std::string failure_sha_;
    std::string success_sha_;
};

// Redis with a plain HINCRBY for failure (less work than cbd's): the
// pipelined comparison of the performance issue.
class RedisIncrProtocol final : public Protocol {
  public:
    void first_request(OpKind op, std::uint64_t key, std::string& out) override;
    bool follow_up(OpKind, std::uint64_t, std::string_view, std::string&) override { return false; }
    std::size_t reply_length(std::string_view data) override;
    bool is_error(std::string_view reply) override;
};

// cbd's own Redis Functions library (daemon/backends/redis/cbd_functions.lua), driven
// directly with the keys and arguments cbd passes: what `--backend redis`
// costs Redis, without cbd in between.
class RedisCbdFunctionProtocol final : public Protocol {
  public:
    // cbd's library must be loaded first (load_redis_library).
    RedisCbdFunctionProtocol();
    void first_request(OpKind op, std::uint64_t key, std::string& out) override;
    bool follow_up(OpKind, std::uint64_t, std::string_view, std::string&) override { return false; }
    std::size_t reply_length(std::string_view data) override;
    bool is_error(std::string_view reply) override;

  private:
    std::string get_ = cbd::redis_function_name(cbd::RedisFunction::Get);
    std::string success_ = cbd::redis_function_name(cbd::RedisFunction::Success);
    std::string failure_ = cbd::redis_function_name(cbd::RedisFunction::Failure);
    std::string max_circuits_ = std::to_string(cbd::kDefaultMaxCircuits);
    std::vector<std::string> policy_args_;
};

// SCRIPT LOAD of `script` on Redis at `socket_path`; returns the SHA.
std::string load_redis_script(const std::string& socket_path, const std::string& script);
// FUNCTION LOAD REPLACE of a library's `source` on Redis at `socket_path`.
void load_redis_library(const std::string& socket_path, const std::string& source);

// Length of the first complete RESP value in `data`, 0 if incomplete.
std::size_t resp_value_length(std::string_view data);

// Loads both scripts over `socket_path`; returns {failure_sha, success_sha}.
std::pair<std::string, std::string> load_redis_scripts(const std::string& socket_path);

} // namespace cbbench
