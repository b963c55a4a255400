// run_daemon: wires the listener, store, dispatcher and server to one
// event-loop thread, and handles signals and systemd notifications.
#include "daemon/app/daemon.hpp"
#include "daemon/backends/persist/persistence.hpp"
#include "daemon/core/log.hpp"

#include "daemon/app/service_manager.hpp"
#include "daemon/backends/memory/durable_backend.hpp"
#include "daemon/backends/memory/memory_backend.hpp"
#include "daemon/backends/memory/memory_store.hpp"
#include "daemon/backends/redis/redis_backend.hpp"
#include "daemon/config/config_file.hpp"
#include "daemon/config/startup_config.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/dispatch/dispatcher.hpp"
#include "daemon/dispatch/event_hub.hpp"
#include "daemon/http/http_server.hpp"
#include "daemon/net/access.hpp"
#include "daemon/net/listener.hpp"
#include "daemon/net/server.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <csignal>
#include <cstdio>
#include <functional>
#include <malloc.h>
#include <optional>
#include <sys/resource.h>
#include <unistd.h>

namespace cbd {

namespace asio = boost::asio;

namespace {

// How long shutdown waits for clients to take their last replies.
constexpr auto kShutdownGrace = std::chrono::seconds(5);
// How often leases and pins that nobody touches are checked. Any operation
// on a circuit applies its own expiries at once; this only bounds how late an
// untouched circuit notices.
constexpr auto kExpiryTick = std::chrono::milliseconds(100);
// How often freed heap goes back to the system. Bursts of connections leave
// their buffers in malloc's free lists; a long-running daemon should give
// that memory back rather than keep its peak forever.
constexpr auto kTrimInterval = std::chrono::seconds(10);

std::string describe(const AccessConfig& a) {
    if (!a.restricted())
        return "no access groups: every peer that can connect is admin";
    auto g = [](const std::optional<gid_t>& gid) {
        return gid ? "gid " + std::to_string(*gid) : std::string("none");
    };
    return "writer group " + g(a.writer_group) + ", admin group " + g(a.admin_group) +
           "; others read only";
}

// Runs `task` every `interval` on `timer`, until the timer is cancelled.
void run_every(asio::steady_timer& timer, std::chrono::steady_clock::duration interval,
               std::function<void()> task) {
    timer.expires_after(interval);
    timer.async_wait(
        [&timer, interval, task = std::move(task)](const boost::system::error_code& ec) {
            if (ec)
                return;
            task();
            run_every(timer, interval, task);
        });
}

// Each connection is a descriptor: raise the soft limit to the hard one (as
// daemons are expected to; systemd's default soft limit is 1024) and say so
// if --max-connections cannot be reached.
void raise_descriptor_limit(std::size_t max_connections, std::size_t http_descriptors) {
    rlimit lim{};
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0)
        return;
    if (lim.rlim_cur < lim.rlim_max) {
        rlimit raised = lim;
        raised.rlim_cur = lim.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
            lim = raised;
    }
    // Listening socket, lock, log, the HTTP listener's requests and event
    // streams, lingering refusals and a margin besides the clients.
    const rlim_t reserved = 32 + 64 + http_descriptors;
    if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < max_connections + reserved)
        log_warn("the descriptor limit (" + std::to_string(lim.rlim_cur) +
                 ") is below --max-connections + " + std::to_string(reserved) +
                 "; connections beyond it wait in the backlog (raise LimitNOFILE)");
}

// Opens and loads the state file into `store`. With --move-corrupt-state an
// unreadable file is moved aside and the daemon starts empty (with a fresh
// store: a load that failed half-way may have filled the old one). Throws
// StateFileError.
std::unique_ptr<Persistence>
open_state(const DaemonConfig& config, std::unique_ptr<MemoryCircuitStore>& store,
           const std::function<std::unique_ptr<MemoryCircuitStore>()>& fresh_store,
           const Clock& clock) {
    const PersistenceOptions options{
        {config.state_file, config.storage_fault_file}, config.sync_mode, config.sync_interval};
    for (bool moved = false;; moved = true) {
        try {
            auto persistence =
                std::make_unique<Persistence>(StateFile::open(options.file), options, *store);
            persistence->load(clock.now_ms() + clock.wall_offset_ms());
            return persistence;
        } catch (const StateFileError& e) {
            if (e.kind() != StateFileError::Kind::Unreadable || !config.move_corrupt_state || moved)
                throw;
            store = fresh_store();
            const auto target = StateFile::move_aside(config.state_file);
            log_warn(std::string(e.what()) + "; moved it to " + target +
                     " (--move-corrupt-state) and starting with no circuits");
        }
    }
}

} // namespace

int run_daemon(const DaemonConfig& config) {
    // A client that disconnects mid-reply must not kill us with SIGPIPE.
    std::signal(SIGPIPE, SIG_IGN);
    raise_descriptor_limit(config.max_connections,
                           config.http_listen.empty() ? 0 : 16 + config.http_max_event_clients);

    std::optional<Listener> listener;
    try {
        listener.emplace(Listener::open(ListenerOptions{config.socket_path, config.socket_mode}));
    } catch (const StartupError& e) {
        log_error(std::string("cannot start: ") + e.what());
        return 1;
    }

    std::unique_ptr<Clock> clock_owner;
    if (config.test_clock_file.empty()) {
        clock_owner = std::make_unique<SystemClock>();
    } else {
        clock_owner = std::make_unique<FileClock>(config.test_clock_file);
        log_warn("--test-clock: the time comes from " + config.test_clock_file +
                 "; for tests only");
    }
    const Clock& clock = *clock_owner;
    DaemonStats stats;
    EventHub events(stats); // outlives io: sessions unsubscribe as they go
    auto make_store = [&] {
        return std::make_unique<MemoryCircuitStore>(clock, config.max_circuits, &events);
    };
    std::unique_ptr<MemoryCircuitStore> store_owner = make_store();
    std::unique_ptr<Persistence> persistence;
    if (!config.state_file.empty()) {
        try {
            persistence = open_state(config, store_owner, make_store, clock);
            stats.storage = &persistence->stats();
        } catch (const StateFileError& e) {
            log_error(std::string("cannot start: ") + e.what() +
                      (e.kind() == StateFileError::Kind::Unreadable
                           ? " (the file is left as it is; repair or move it, or start with "
                             "--move-corrupt-state to move it aside and start empty)"
                           : ""));
            return 1;
        }
    }
    MemoryCircuitStore& store = *store_owner;
    Settings settings;
    try {
        settings = load_settings(config);
    } catch (const ConfigError& e) {
        log_error(std::string("cannot start: ") + e.what());
        return 1;
    }
    AccessConfig access = settings.access;
    log_info("access: " + describe(access));
    // One thread, and nothing is posted from another (signals arrive through
    // Asio's own pipe): the scheduler and reactor need no locks.
    asio::io_context io(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE);

    // The one backend the dispatcher sees: Redis (--backend redis), memory
    // with answers held for the commit (--sync always), or memory.
    std::optional<RedisStore> redis;
    std::unique_ptr<CircuitBackend> backend;
    if (!config.redis_url.empty()) {
        RedisStoreOptions options;
        if (is_sentinel_url(config.redis_url)) {
            SentinelOptions sentinel;
            if (auto error = SentinelAddress::parse(config.redis_url, sentinel.address)) {
                log_error("cannot start: --redis " + config.redis_url + ": " + *error);
                return 1;
            }
            sentinel.password = config.redis_sentinel_password;
            sentinel.timeout = config.backend_timeout;
            options.sentinel = std::move(sentinel);
        } else if (auto error =
                       RedisEndpoint::parse(config.redis_url, options.connection.endpoint)) {
            log_error("cannot start: --redis " + config.redis_url + ": " + *error);
            return 1;
        }
        options.min_replicas = config.redis_min_replicas;
        char host[256] = {};
        if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0')
            std::snprintf(host, sizeof host, "unknown");
        options.instance = std::string(host) + ":" + listener->path();
        options.connection.password = config.redis_password;
        options.connection.timeout = config.backend_timeout;
        options.prefix = config.redis_prefix;
        options.max_circuits = config.max_circuits;
        options.test_clock = config.test_clock_file.empty() ? nullptr : &clock;
        redis.emplace(io, options, &events);
        stats.backend = &redis->stats();
        backend = std::make_unique<RedisBackend>(*redis);
    } else if (persistence && config.sync_mode == SyncMode::Always) {
        backend = std::make_unique<DurableBackend>(store, *persistence);
    } else {
        backend = std::make_unique<MemoryBackend>(store);
    }
    backend->set_policy_config(std::move(settings.policy));

    Dispatcher dispatcher(*backend, stats);
    SessionSet sessions(stats); // outlives io, see SessionSet
    Server server(
        io, listener->release_fd(),
        SessionShared{dispatcher, sessions, events, stats, access, config.max_line_bytes,
                      config.watch_queue,
                      ConnectionLimits{config.max_connections, config.max_connections_per_uid,
                                       config.reserved_connections, geteuid()},
                      config.idle_timeout, config.request_timeout});

    std::optional<HttpServer> http;
    if (!config.http_listen.empty()) {
        try {
            http.emplace(io,
                         HttpServerOptions{config.http_listen, config.http_allow_remote,
                                           config.http_max_event_clients, config.watch_queue},
                         dispatcher, events, stats);
        } catch (const StartupError& e) {
            log_error(std::string("cannot start: ") + e.what());
            return 1;
        }
    }

    asio::steady_timer grace(io);
    asio::steady_timer watchdog(io);
    asio::steady_timer expiry(io);
    asio::steady_timer trim(io);
    asio::signal_set signals(io, SIGTERM, SIGINT, SIGHUP);

    auto shut_down = [&](std::string_view why) {
        log_info("received " + std::string(why) + "; shutting down");
        notify_stopping();
        signals.cancel();
        watchdog.cancel();
        expiry.cancel();
        trim.cancel();
        if (persistence)
            persistence->stop_timer();
        grace.expires_after(kShutdownGrace);
        grace.async_wait([&](const boost::system::error_code& ec) {
            if (!ec) {
                log_warn("clients did not take their last replies in time; closing anyway");
                io.stop();
            }
        });
        if (http)
            http->stop();
        // run() returns once the sessions are gone and the timer is cancelled.
        server.stop([&] {
            grace.cancel();
            if (redis)
                redis->stop(); // the last replies are out: nothing waits on Redis
        });
    };

    std::function<void()> wait_signal = [&] {
        signals.async_wait([&](const boost::system::error_code& ec, int signo) {
            if (ec)
                return;
            if (signo == SIGHUP) {
                if (config.config_path.empty()) {
                    log_info("SIGHUP: no --config file to reload");
                } else {
                    try {
                        auto reloaded = load_settings(config);
                        const auto rules = reloaded.policy.rules.size();
                        backend->set_policy_config(std::move(reloaded.policy));
                        access = reloaded.access; // applies to new connections
                        log_info("SIGHUP: reloaded " + config.config_path + " (" +
                                 std::to_string(rules) + " prefix rules; " + describe(access) +
                                 ")");
                    } catch (const ConfigError& e) {
                        log_error(std::string("SIGHUP: ") + e.what() +
                                  "; keeping the previous configuration");
                    }
                }
                wait_signal();
                return;
            }
            shut_down(signo == SIGTERM ? "SIGTERM" : "SIGINT");
        });
    };
    wait_signal();

    if (auto interval = watchdog_ping_interval()) {
        // Pinged from the loop itself: if the loop wedges, the pings stop.
        notify_watchdog();
        run_every(watchdog, *interval, notify_watchdog);
    }
    run_every(expiry, kExpiryTick, [&backend] { backend->tick(); });
    run_every(trim, kTrimInterval, [] { malloc_trim(0); });

    if (persistence)
        persistence->start(io);
    if (redis) {
        redis->start();
        log_info("circuits live in Redis at " + redis->stats().address + " (key prefix '" +
                 config.redis_prefix + "')");
    }
    server.start();
    if (http) {
        http->start();
        log_info("serving the dashboard at http://" + http->local_endpoint() +
                 "/ (metrics at /metrics)");
    }
    log_info("serving " + listener->path() + (listener->activated() ? " (socket activation)" : "") +
             "; protocol " + std::to_string(kProtocolVersion));
    notify_ready("Serving " + listener->path());

    io.run();

    // Written before the socket goes: a restart that finds no socket finds
    // the state complete.
    const bool written = !persistence || persistence->shut_down();
    stats.storage = nullptr; // the section goes with the Persistence that owns it
    persistence.reset();
    listener->remove_socket_file();
    log_info("stopped");
    return written ? 0 : 1;
}

} // namespace cbd
