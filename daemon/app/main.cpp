// cbd: parses flags into a DaemonConfig and runs the daemon.
#include "common/duration.hpp"
#include "common/protocol.hpp"
#include "common/socket_path.hpp"
#include "daemon/app/daemon.hpp"
#include "daemon/backends/persist/persistence.hpp"
#include "daemon/backends/redis/redis_connection.hpp"
#include "daemon/backends/redis/redis_sentinel.hpp"
#include "daemon/config/startup_config.hpp"
#include "daemon/core/log.hpp"
#include "daemon/core/safe_file.hpp"
#include "daemon/http/http_request.hpp"
#include "daemon/net/connection_limits.hpp"
#include "daemon/net/listener.hpp"

#include <CLI/CLI.hpp>
#include <array>
#include <cstdlib>
#include <iostream>
#include <optional>

namespace {

// Far beyond any real password; a bound so that pointing the flag at a large
// file (or /dev/zero) is an error, not memory spent.
constexpr std::size_t kMaxPasswordFileBytes = 64 * 1024;

// A bound for --redis-min-replicas: more replicas than any deployment has
// (WAIT would only time out).
constexpr std::size_t kMaxMinReplicas = 16;

// Reads the Redis password: the file's bytes, less exactly one trailing "\n"
// or "\r\n" (editors add one; a file written on Windows ends in CRLF, and a
// '\r' sent to AUTH is a wrong password). Nothing else is trimmed: a password
// may hold any bytes, spaces included. Returns why it cannot be used.
std::optional<std::string> read_password_file(const std::string& path, std::string& password) {
    // A symlink to the file is normal (a secret store's, Kubernetes'
    // mounted secrets): followed, and its target must be a regular file.
    // A FIFO, a device or a directory is refused before anything is read.
    std::string content;
    if (auto problem =
            cbd::read_regular_file(path, kMaxPasswordFileBytes, cbd::Symlinks::Follow, content))
        return problem;
    if (content.ends_with("\r\n"))
        content.resize(content.size() - 2);
    else if (content.ends_with('\n'))
        content.pop_back();
    // An empty password would silently mean "no AUTH": say so instead.
    if (content.empty())
        return path + " is empty: it must hold the Redis password";
    password = std::move(content);
    return std::nullopt;
}

// Checks that the option's value is from `min` to `max`, and says so in its
// description ("(1 to 16)"), where --help reads best, instead of CLI11's
// "UINT in [1 - 16]" after the value's name.
template <typename T> CLI::Option* with_range(CLI::Option* option, T min, T max) {
    option->check(CLI::Range(min, max).description(""));
    option->description(option->get_description() + " (" + std::to_string(min) + " to " +
                        std::to_string(max) + ")");
    return option;
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"cbd: circuit-breaker state for every process on this machine, served as "
                 "newline-delimited JSON on a Unix socket."};
    app.set_version_flag("--version", std::string("cbd ") + std::string(cbd::kVersion) +
                                          " (protocol " + std::to_string(cbd::kProtocolVersion) +
                                          ")");
    // Like nginx -t: the same flags and file a start reads, checked, then exit.
    bool check_config_only = false;
    app.add_flag("--check-config", check_config_only,
                 "Read the flags and --config as a start would, print the effective defaults "
                 "and prefix rules (or the first error), and exit 0 (usable) or 1 (2 for a "
                 "usage error, as at a start); opens no socket and no state file");

    std::string socket_flag;
    std::string socket_mode = "0660";
    std::size_t max_line_bytes = cbd::kDefaultMaxLineBytes;
    std::size_t max_circuits = cbd::kDefaultMaxCircuits;
    std::string log_level = "info";
    std::string config_path;
    std::size_t watch_queue = cbd::kDefaultWatchQueue;
    std::string writer_group, admin_group, idle_timeout = "0";
    std::size_t max_connections = cbd::kDefaultMaxConnections;
    std::size_t max_connections_per_uid = cbd::kDefaultMaxConnectionsPerUid;
    std::optional<std::size_t> reserved_connections;
    std::string request_timeout = "10s";
    std::string http_listen;
    bool http_allow_remote = false;
    std::size_t http_max_event_clients = cbd::kDefaultHttpEventClients;
    std::string state_file, sync_mode = "batch";
    std::int64_t sync_interval_ms = 100;
    bool move_corrupt_state = false;
    std::string backend = "memory", redis_url, redis_password_file,
                redis_prefix = "cbd:", backend_timeout = "1s", redis_sentinel_password_file;
    std::size_t redis_min_replicas = 0;
    std::string test_clock_file;
    // Empty = not given on the command line; names and help come from
    // the policy's field table (common/policy.hpp).
    std::array<std::string, cbd::kPolicyFieldCount> policy_flags{};

    // A duration (300s, 5m) or 0 for "never".
    const auto duration_or_off = [](const std::string& v) {
        return v == "0" || cbd::parse_duration(v) ? std::string() : "'" + v + "' is not a duration";
    };

    // --help lists the flags by group, in the order each group's first flag
    // is added here; each value is named for what is typed (N, MS, PATH).
    app.add_option("--log-level", log_level, "error, warn, info or debug")
        ->type_name("LEVEL")
        ->capture_default_str()
        ->check(CLI::IsMember({"error", "warn", "info", "debug"}));

    const std::string access = "Socket and access";
    app.add_option("--socket", socket_flag,
                   "Socket path (default: $CBD_SOCKET, else $XDG_RUNTIME_DIR/cbd/cbd.sock for "
                   "non-root users, else /run/cbd/cbd.sock)")
        ->type_name("PATH")
        ->group(access);
    app.add_option("--socket-mode", socket_mode, "Octal mode of the socket file")
        ->type_name("MODE")
        ->capture_default_str()
        ->group(access);
    app.add_option("--writer-group", writer_group,
                   "Group (name or gid) whose members may record outcomes (write level)")
        ->type_name("GROUP")
        ->group(access);
    app.add_option("--admin-group", admin_group,
                   "Group (name or gid) whose members may also transition, reset, force and "
                   "configure (admin level). With neither group set, everyone who can connect "
                   "is admin")
        ->type_name("GROUP")
        ->group(access);

    const std::string limits = "Limits";
    with_range(app.add_option("--max-line-bytes", max_line_bytes, "Longest request line accepted"),
               std::size_t{64}, std::size_t{64} * 1024 * 1024)
        ->type_name("N")
        ->capture_default_str()
        ->group(limits);
    with_range(app.add_option("--max-circuits", max_circuits, "Most circuits held at once"),
               std::size_t{1}, std::size_t{1} << 40)
        ->type_name("N")
        ->capture_default_str()
        ->group(limits);
    with_range(
        app.add_option("--max-connections", max_connections, "Most client connections at once"),
        std::size_t{1}, std::size_t{1'000'000})
        ->type_name("N")
        ->capture_default_str()
        ->group(limits);
    with_range(app.add_option("--max-connections-per-uid", max_connections_per_uid,
                              "Most connections one uid may hold at once (0 = no limit; root and "
                              "cbd's own uid are exempt)"),
               std::size_t{0}, std::size_t{1'000'000})
        ->type_name("N")
        ->capture_default_str()
        ->group(limits);
    with_range(app.add_option("--reserved-connections", reserved_connections,
                              "Connections kept for write- and admin-level peers: read-level "
                              "peers may hold --max-connections minus this (default: 1/16 of "
                              "--max-connections, at least 1)"),
               std::size_t{0}, std::size_t{1'000'000})
        ->type_name("N")
        ->group(limits);
    app.add_option("--idle-timeout", idle_timeout,
                   "Close connections idle this long (300s, 5m; 0 = never; watchers excepted)")
        ->type_name("DURATION")
        ->capture_default_str()
        ->check(duration_or_off)
        ->group(limits);
    app.add_option("--request-timeout", request_timeout,
                   "Close a connection whose unfinished request line is not finished within "
                   "this, however it trickles in (0 = never; applies with --idle-timeout off)")
        ->type_name("DURATION")
        ->capture_default_str()
        ->check(duration_or_off)
        ->group(limits);
    with_range(app.add_option("--watch-queue", watch_queue,
                              "Events a watcher may fall behind before it is dropped"),
               std::size_t{1}, std::size_t{10'000'000})
        ->type_name("N")
        ->capture_default_str()
        ->group(limits);

    const std::string policy = "Policy";
    app.add_option("--config", config_path,
                   "JSON policy file (defaults and prefix rules); re-read on SIGHUP")
        ->type_name("FILE")
        ->group(policy);
    for (std::size_t i = 0; i < cbd::kPolicyFieldCount; ++i) {
        const auto field = static_cast<cbd::PolicyField>(i);
        app.add_option(cbd::policy_flag_name(field), policy_flags[i],
                       std::string(cbd::kPolicyFieldHelp[i]))
            ->type_name(std::string(cbd::kPolicyFieldValueNames[i]))
            ->check([field](const std::string& v) {
                std::string error;
                return cbd::parse_policy_text(field, v, error) ? std::string() : error;
            })
            ->group(policy);
    }

    const std::string persistence = "Persistence";
    app.add_option("--state-file", state_file,
                   "Keep circuits in this SQLite file across restarts and crashes (default: "
                   "memory only; under systemd, $STATE_DIRECTORY/state.db)")
        ->type_name("FILE")
        ->group(persistence);
    app.add_option("--sync", sync_mode,
                   "always: a change is answered once committed and synced (group commit); "
                   "batch: changes are written every --sync-interval-ms; off: only at clean "
                   "shutdown")
        ->type_name("MODE")
        ->capture_default_str()
        ->check(CLI::IsMember({"always", "batch", "off"}))
        ->group(persistence);
    with_range(app.add_option("--sync-interval-ms", sync_interval_ms,
                              "How often batch mode writes changed circuits"),
               std::int64_t{1}, std::int64_t{3'600'000})
        ->type_name("MS")
        ->capture_default_str()
        ->group(persistence);
    app.add_flag("--move-corrupt-state", move_corrupt_state,
                 "If the state file cannot be read, move it aside (to FILE.corrupt-TIME) and "
                 "start empty instead of refusing to start")
        ->group(persistence);

    const std::string redis = "Redis";
    app.add_option("--backend", backend,
                   "memory: circuits in this daemon; redis: circuits in Redis (--redis), shared "
                   "with every cbd that uses the same Redis and prefix")
        ->type_name("KIND")
        ->capture_default_str()
        ->check(CLI::IsMember({"memory", "redis"}))
        ->group(redis);
    app.add_option("--redis", redis_url,
                   "Redis address for --backend redis: unix:///path/redis.sock, "
                   "tcp://HOST:PORT, or sentinel://HOST:PORT[,HOST:PORT...]/MASTERNAME to follow "
                   "the master that Redis Sentinel names")
        ->type_name("ADDRESS")
        ->group(redis);
    app.add_option("--redis-password-file", redis_password_file,
                   "File holding the Redis password (AUTH): the whole file, less one trailing "
                   "newline (\\n or \\r\\n)")
        ->type_name("FILE")
        ->group(redis);
    app.add_option("--redis-sentinel-password-file", redis_sentinel_password_file,
                   "File holding the sentinels' password (AUTH), as --redis-password-file; "
                   "only with a sentinel:// address")
        ->type_name("FILE")
        ->group(redis);
    app.add_option("--redis-prefix", redis_prefix,
                   "Start of every Redis key this cbd uses, so deployments can share a Redis")
        ->type_name("PREFIX")
        ->capture_default_str()
        ->group(redis);
    with_range(app.add_option("--redis-min-replicas", redis_min_replicas,
                              "Acknowledge a change only once this many replicas have it (WAIT); "
                              "else backend_unavailable, and the change may have been applied. "
                              "0: acknowledge what the master applied"),
               std::size_t{0}, kMaxMinReplicas)
        ->type_name("N")
        ->capture_default_str()
        ->group(redis);
    app.add_option("--backend-timeout", backend_timeout,
                   "How long an operation waits for Redis before backend_unavailable (300ms, 2s)")
        ->type_name("DURATION")
        ->capture_default_str()
        ->check([](const std::string& v) {
            return cbd::parse_duration(v) ? std::string() : "'" + v + "' is not a duration";
        })
        ->group(redis);

    const std::string http = "HTTP";
    // --metrics-listen is the flag's name from before the dashboard: kept.
    app.add_option("--http-listen,--metrics-listen", http_listen,
                   "Serve the read-only dashboard (/), its API (/api/circuits, /api/events) "
                   "and Prometheus metrics (/metrics) at http://ADDR:PORT (off by default; "
                   "a loopback address unless --http-allow-remote)")
        ->type_name("ADDR:PORT")
        ->group(http);
    app.add_flag("--http-allow-remote", http_allow_remote,
                 "Let --http-listen bind a non-loopback address: anyone who can reach it sees "
                 "every circuit (read only)")
        ->group(http);
    with_range(app.add_option("--http-max-event-clients", http_max_event_clients,
                              "Most /api/events streams (open dashboards) at once"),
               std::size_t{1}, std::size_t{10'000})
        ->type_name("N")
        ->capture_default_str()
        ->group(http);

    app.add_option("--test-clock", test_clock_file,
                   "Tests only: read the time (epoch ms) from FILE instead of the system clock "
                   "(one time, or the wall clock then the monotonic one)")
        ->type_name("FILE")
        ->group("Testing");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int code = app.exit(e);
        return code == 0 ? 0 : 2;
    }

    cbd::log_init(*cbd::parse_log_level(log_level));

    cbd::DaemonConfig config;
    config.socket_path = cbd::resolve_socket_path(socket_flag);
    config.max_line_bytes = max_line_bytes;
    config.max_circuits = max_circuits;
    config.config_path = config_path;
    config.watch_queue = watch_queue;
    config.http_listen = http_listen;
    config.http_allow_remote = http_allow_remote;
    config.http_max_event_clients = http_max_event_clients;
    config.writer_group = writer_group;
    config.admin_group = admin_group;
    config.max_connections = max_connections;
    config.max_connections_per_uid = max_connections_per_uid;
    config.reserved_connections =
        reserved_connections.value_or(cbd::default_reserved_connections(max_connections));
    if (config.reserved_connections >= max_connections) {
        std::cerr << "cbd: --reserved-connections " << config.reserved_connections
                  << " leaves read-level peers no connection: it must be below "
                     "--max-connections "
                  << max_connections << "\n";
        return 2;
    }
    if (request_timeout != "0")
        config.request_timeout = *cbd::parse_duration(request_timeout);
    if (backend == "redis") {
        if (redis_url.empty()) {
            std::cerr << "cbd: --backend redis needs --redis ADDRESS\n";
            return 2;
        }
        if (!state_file.empty()) {
            std::cerr << "cbd: --state-file is for the memory backend; with --backend redis the "
                         "circuits persist in Redis\n";
            return 2;
        }
        // Checked here, so that a bad address is a usage error (exit 2), for
        // --check-config too.
        std::optional<std::string> bad_address;
        if (cbd::is_sentinel_url(redis_url)) {
            cbd::SentinelAddress sentinel;
            bad_address = cbd::SentinelAddress::parse(redis_url, sentinel);
        } else {
            cbd::RedisEndpoint endpoint;
            bad_address = cbd::RedisEndpoint::parse(redis_url, endpoint);
            if (!bad_address && !redis_sentinel_password_file.empty())
                bad_address = "--redis-sentinel-password-file needs a sentinel:// address";
        }
        if (bad_address) {
            std::cerr << "cbd: --redis " << redis_url << ": " << *bad_address << "\n";
            return 2;
        }
        config.redis_url = redis_url;
        config.redis_prefix = redis_prefix;
        config.redis_min_replicas = redis_min_replicas;
        if (!redis_sentinel_password_file.empty()) {
            if (auto problem = read_password_file(redis_sentinel_password_file,
                                                  config.redis_sentinel_password)) {
                std::cerr << "cbd: " << *problem << "\n";
                return 2;
            }
        }
        config.backend_timeout = *cbd::parse_duration(backend_timeout);
        if (!redis_password_file.empty()) {
            if (auto problem = read_password_file(redis_password_file, config.redis_password)) {
                std::cerr << "cbd: " << *problem << "\n";
                return 2;
            }
        }
    } else if (!redis_url.empty()) {
        std::cerr << "cbd: --redis needs --backend redis\n";
        return 2;
    } else if (redis_min_replicas != 0 || !redis_sentinel_password_file.empty()) {
        std::cerr << "cbd: --redis-min-replicas and --redis-sentinel-password-file need "
                     "--backend redis\n";
        return 2;
    }
    config.state_file = state_file;
    config.sync_mode = *cbd::parse_sync_mode(sync_mode);
    config.sync_interval = std::chrono::milliseconds(sync_interval_ms);
    config.move_corrupt_state = move_corrupt_state;
    config.test_clock_file = test_clock_file;
    // The storage fault-injection hook (tests only; see daemon/backends/persist/fault_vfs.hpp).
    if (const char* fault = std::getenv("CBD_STORAGE_FAULT_FILE"))
        config.storage_fault_file = fault;
    if (idle_timeout != "0")
        config.idle_timeout = *cbd::parse_duration(idle_timeout);
    for (std::size_t i = 0; i < cbd::kPolicyFieldCount; ++i) {
        std::string error;
        if (!policy_flags[i].empty())
            config.flag_defaults.values[i] =
                cbd::parse_policy_text(static_cast<cbd::PolicyField>(i), policy_flags[i], error);
    }
    if (auto problem = cbd::patch_combination_problem(config.flag_defaults)) {
        std::cerr << "cbd: " << *problem << "\n";
        return 2;
    }
    try {
        config.socket_mode = cbd::parse_socket_mode(socket_mode);
    } catch (const cbd::StartupError& e) {
        std::cerr << "cbd: " << e.what() << "\n";
        return 2;
    }
    if (check_config_only)
        return cbd::check_config(config, std::cout, std::cerr);
    return cbd::run_daemon(config);
}
