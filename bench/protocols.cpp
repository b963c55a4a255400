// Request templates and reply framing per server (see protocols.hpp).
#include "bench/protocols.hpp"

#include "common/protocol.hpp"

#include "daemon/backends/redis/redis_functions.hpp"

#include <charconv>
#include <cstring>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace cbbench {

namespace {

// A fixed timestamp argument for the Redis scripts (cbd reads its own clock).
constexpr std::string_view kNowArg = "1764201600000";

std::string_view field_value(std::string_view reply, std::string_view name) {
    auto at = reply.find(name);
    if (at == std::string_view::npos)
        return {};
    auto start = at + name.size();
    auto end = start;
    while (end < reply.size() && reply[end] != ',' && reply[end] != '}')
        ++end;
    return reply.substr(start, end - start);
}

void append_bulk(std::string& out, std::string_view s) {
    out += '$';
    out += std::to_string(s.size());
    out += "\r\n";
    out += s;
    out += "\r\n";
}

template <typename Args> void append_command_of(std::string& out, const Args& args) {
    out += '*';
    out += std::to_string(args.size());
    out += "\r\n";
    for (auto a : args)
        append_bulk(out, a);
}

void append_command(std::string& out, std::initializer_list<std::string_view> args) {
    append_command_of(out, args);
}

void append_command(std::string& out, const std::vector<std::string_view>& args) {
    append_command_of(out, args);
}

} // namespace

std::string key_name(std::uint64_t key) {
    return "api-" + std::to_string(key);
}

std::optional<std::vector<MixEntry>> parse_op_mix(std::string_view text, std::string& error) {
    auto single = [](std::string_view name) -> std::optional<OpKind> {
        if (name == "get")
            return OpKind::Get;
        if (name == "success")
            return OpKind::Success;
        if (name == "failure")
            return OpKind::Failure;
        if (name == "acquire-report")
            return OpKind::AcquireReport;
        return std::nullopt;
    };
    if (auto op = single(text))
        return std::vector<MixEntry>{{*op, 100}};
    if (!text.starts_with("mix:")) {
        error = "unknown --op '" + std::string(text) + "'";
        return std::nullopt;
    }
    std::vector<MixEntry> mix;
    int total = 0;
    text.remove_prefix(4);
    while (!text.empty()) {
        auto comma = text.find(',');
        auto item = text.substr(0, comma);
        text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
        auto eq = item.find('=');
        auto op = single(item.substr(0, eq));
        int weight = 0;
        if (eq == std::string_view::npos || !op ||
            std::from_chars(item.data() + eq + 1, item.data() + item.size(), weight).ec !=
                std::errc{} ||
            weight <= 0) {
            error = "bad mix entry '" + std::string(item) + "' (expected op=weight)";
            return std::nullopt;
        }
        mix.push_back({*op, weight});
        total += weight;
    }
    if (total != 100) {
        error = "mix weights add up to " + std::to_string(total) + ", not 100";
        return std::nullopt;
    }
    return mix;
}

// --- cbd ----------------------------------------------------------------------

void CbdProtocol::first_request(OpKind op, std::uint64_t key, std::string& out) {
    const char* name = op == OpKind::Get       ? "get"
                       : op == OpKind::Success ? "success"
                       : op == OpKind::Failure ? "failure"
                                               : "acquire";
    out += "{\"op\":\"";
    out += name;
    out += "\",\"key\":\"api-";
    out += std::to_string(key);
    out += "\"}\n";
}

bool CbdProtocol::follow_up(OpKind op, std::uint64_t key, std::string_view reply,
                            std::string& out) {
    if (op != OpKind::AcquireReport || reply.find("\"allowed\":true") == std::string_view::npos)
        return false;
    // Report a success with the acquire's generation (and permit, if any).
    out += "{\"op\":\"report\",\"key\":\"api-";
    out += std::to_string(key);
    out += "\",\"outcome\":\"success\",\"generation\":";
    out += field_value(reply, "\"generation\":");
    if (auto permit = field_value(reply, "\"permit\":"); !permit.empty()) {
        out += ",\"permit\":";
        out += permit;
    }
    out += "}\n";
    return true;
}

std::size_t CbdProtocol::reply_length(std::string_view data) {
    auto nl = data.find('\n');
    return nl == std::string_view::npos ? 0 : nl + 1;
}

bool CbdProtocol::is_error(std::string_view reply) {
    return reply.find("\"ok\":false") != std::string_view::npos;
}

// --- Redis ----------------------------------------------------------------------

// The work the performance issue names for the comparison: increment, stamp,
// return the record, atomically. (cbd does a little more: it creates an
// unknown circuit with all five fields first.)
const char* RedisProtocol::failure_script() {
    return "redis.call('HINCRBY',KEYS[1],'failureCount',1) "
           "redis.call('HSET',KEYS[1],'lastFailureTime',ARGV[1]) "
           "return redis.call('HGETALL',KEYS[1])";
}

const char* RedisProtocol::success_script() {
    return "redis.call('HINCRBY',KEYS[1],'successCount',1) "
           "return redis.call('HGETALL',KEYS[1])";
}

RedisProtocol::RedisProtocol(std::string failure_sha, std::string success_sha)
    : failure_sha_(std::move(failure_sha)), success_sha_(std::move(success_sha)) {}

void RedisProtocol::first_request(OpKind op, std::uint64_t key, std::string& out) {
    const std::string k = key_name(key);
    switch (op) {
    case OpKind::Get:
        append_command(out, {"HGETALL", k});
        break;
    case OpKind::Success:
        append_command(out, {"EVALSHA", success_sha_, "1", k, kNowArg});
        break;
    case OpKind::Failure:
    case OpKind::AcquireReport: // rejected at start-up; never sent
        append_command(out, {"EVALSHA", failure_sha_, "1", k, kNowArg});
        break;
    }
}

bool RedisProtocol::follow_up(OpKind, std::uint64_t, std::string_view, std::string&) {
    return false;
}

std::size_t RedisProtocol::reply_length(std::string_view data) {
    return resp_value_length(data);
}

bool RedisProtocol::is_error(std::string_view reply) {
    return !reply.empty() && reply[0] == '-';
}

void RedisIncrProtocol::first_request(OpKind op, std::uint64_t key, std::string& out) {
    const std::string k = key_name(key);
    if (op == OpKind::Get)
        append_command(out, {"HGETALL", k});
    else
        append_command(
            out, {"HINCRBY", k, op == OpKind::Success ? "successCount" : "failureCount", "1"});
}

std::size_t RedisIncrProtocol::reply_length(std::string_view data) {
    return resp_value_length(data);
}

bool RedisIncrProtocol::is_error(std::string_view reply) {
    return !reply.empty() && reply[0] == '-';
}

std::size_t resp_value_length(std::string_view data) {
    if (data.empty())
        return 0;
    auto line_end = data.find("\r\n");
    if (line_end == std::string_view::npos)
        return 0;
    const std::size_t header = line_end + 2;
    switch (data[0]) {
    case '+':
    case '-':
    case ':':
        return header;
    case '$': {
        long long n = 0;
        std::from_chars(data.data() + 1, data.data() + line_end, n);
        if (n < 0)
            return header;
        const std::size_t total = header + static_cast<std::size_t>(n) + 2;
        return data.size() >= total ? total : 0;
    }
    case '*': {
        long long n = 0;
        std::from_chars(data.data() + 1, data.data() + line_end, n);
        std::size_t pos = header;
        for (long long i = 0; i < n; ++i) {
            const std::size_t len = resp_value_length(data.substr(pos));
            if (len == 0)
                return 0;
            pos += len;
        }
        return pos;
    }
    default:
        throw std::runtime_error("not a RESP reply");
    }
}

namespace {

// Sends one command to Redis at `socket_path` and returns its raw reply.
std::string redis_round_trip(const std::string& socket_path, const std::vector<std::string>& argv) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        close(fd);
        throw std::runtime_error("cannot connect to Redis at " + socket_path);
    }
    std::string req;
    std::vector<std::string_view> views(argv.begin(), argv.end());
    append_command(req, views);
    if (write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
        close(fd);
        throw std::runtime_error("cannot send " + argv.front() + " to Redis");
    }
    std::string reply;
    char buf[512];
    while (resp_value_length(reply) == 0) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) {
            close(fd);
            throw std::runtime_error("Redis closed the connection during " + argv.front());
        }
        reply.append(buf, static_cast<std::size_t>(n));
    }
    close(fd);
    return reply;
}

} // namespace

std::string load_redis_script(const std::string& socket_path, const std::string& script) {
    const std::string reply = redis_round_trip(socket_path, {"SCRIPT", "LOAD", script});
    if (reply[0] != '$')
        throw std::runtime_error("SCRIPT LOAD failed: " + reply);
    auto start = reply.find("\r\n") + 2;
    return reply.substr(start, 40);
}

void load_redis_library(const std::string& socket_path, const std::string& source) {
    const std::string reply =
        redis_round_trip(socket_path, {"FUNCTION", "LOAD", "REPLACE", source});
    if (reply[0] != '$')
        throw std::runtime_error("FUNCTION LOAD failed: " + reply);
}

std::pair<std::string, std::string> load_redis_scripts(const std::string& socket_path) {
    return {load_redis_script(socket_path, RedisProtocol::failure_script()),
            load_redis_script(socket_path, RedisProtocol::success_script())};
}

RedisCbdFunctionProtocol::RedisCbdFunctionProtocol() {
    // The default policy, as cbd passes it (no layer sets the lease or the
    // backoff: 0, derived in Redis).
    const cbd::Policy policy;
    for (std::size_t i = 0; i < cbd::kPolicyFieldCount; ++i) {
        const auto field = static_cast<cbd::PolicyField>(i);
        policy_args_.push_back(field == cbd::PolicyField::ProbeLeaseMs ||
                                       field == cbd::PolicyField::ResetTimeoutMaxMs
                                   ? "0"
                                   : std::to_string(policy.get(field)));
    }
}

void RedisCbdFunctionProtocol::first_request(OpKind op, std::uint64_t key, std::string& out) {
    const std::string k = key_name(key);
    const auto keys = cbd::redis_function_keys("cbd:", k);
    const std::string& function = op == OpKind::Get       ? get_
                                  : op == OpKind::Success ? success_
                                                          : failure_;
    const std::string count = std::to_string(keys.size());
    std::vector<std::string_view> argv{"FCALL", function, count};
    argv.insert(argv.end(), keys.begin(), keys.end());
    argv.push_back(k);
    argv.insert(argv.end(), policy_args_.begin(), policy_args_.end());
    if (op == OpKind::Get)
        argv.push_back(cbd::kRedisArgTrue); // create the circuit, as a writer's get does
    argv.push_back(max_circuits_);
    argv.push_back(""); // Redis's own clock
    append_command(out, argv);
}

std::size_t RedisCbdFunctionProtocol::reply_length(std::string_view data) {
    return resp_value_length(data);
}

bool RedisCbdFunctionProtocol::is_error(std::string_view reply) {
    return !reply.empty() && reply[0] == '-';
}

} // namespace cbbench
