// run_daemon: wires the listener, store, dispatcher and server to one
// event-loop thread, and handles signals and systemd notifications.
#include "daemon/daemon.hpp"

#include "daemon/clock.hpp"
#include "daemon/config_file.hpp"
#include "daemon/dispatcher.hpp"
#include "daemon/event_hub.hpp"
#include "daemon/listener.hpp"
#include "daemon/memory_store.hpp"
#include "daemon/metrics_http.hpp"
#include "daemon/server.hpp"
#include "daemon/service_manager.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <csignal>
#include <functional>
#include <optional>

namespace cbd {

namespace asio = boost::asio;

namespace {

// How long shutdown waits for clients to take their last replies.
constexpr auto kShutdownGrace = std::chrono::seconds(5);
// How often leases and pins that nobody touches are checked. Any operation
// on a circuit applies its own expiries at once; this only bounds how late an
// untouched circuit notices.
constexpr auto kExpiryTick = std::chrono::milliseconds(100);

// Built-in defaults, then the file's "defaults", then flags.
PolicyConfig policy_config(const DaemonConfig& config) {
    PolicyConfig pc;
    if (!config.config_path.empty())
        pc = load_policy_config(config.config_path);
    pc.defaults.merge(config.flag_defaults);
    return pc;
}

} // namespace

int run_daemon(const DaemonConfig& config) {
    // A client that disconnects mid-reply must not kill us with SIGPIPE.
    std::signal(SIGPIPE, SIG_IGN);

    std::optional<Listener> listener;
    try {
        listener.emplace(Listener::open(ListenerOptions{config.socket_path, config.socket_mode}));
    } catch (const StartupError& e) {
        log_error(std::string("cannot start: ") + e.what());
        return 1;
    }

    SystemClock clock;
    DaemonStats stats;
    EventHub events(stats); // outlives io: sessions unsubscribe as they go
    MemoryCircuitStore store(clock, config.max_circuits, &events);
    try {
        store.set_policy_config(policy_config(config));
    } catch (const ConfigError& e) {
        log_error(std::string("cannot start: ") + e.what());
        return 1;
    }
    Dispatcher dispatcher(store, stats);
    SessionSet sessions(stats); // outlives io, see SessionSet
    asio::io_context io(1);
    Server server(io, listener->release_fd(),
                  SessionShared{dispatcher, sessions, events, stats, config.max_line_bytes,
                                config.watch_queue});

    std::optional<MetricsHttpServer> metrics_http;
    if (!config.metrics_listen.empty()) {
        try {
            metrics_http.emplace(io, config.metrics_listen,
                                 [&dispatcher] { return dispatcher.metrics_text(false); });
        } catch (const StartupError& e) {
            log_error(std::string("cannot start: ") + e.what());
            return 1;
        }
    }

    asio::steady_timer grace(io);
    asio::steady_timer watchdog(io);
    asio::steady_timer expiry(io);
    asio::signal_set signals(io, SIGTERM, SIGINT, SIGHUP);

    auto shut_down = [&](std::string_view why) {
        log_info("received " + std::string(why) + "; shutting down");
        notify_stopping();
        signals.cancel();
        watchdog.cancel();
        expiry.cancel();
        grace.expires_after(kShutdownGrace);
        grace.async_wait([&](const boost::system::error_code& ec) {
            if (!ec) {
                log_warn("clients did not take their last replies in time; closing anyway");
                io.stop();
            }
        });
        if (metrics_http)
            metrics_http->stop();
        // run() returns once the sessions are gone and the timer is cancelled.
        server.stop([&] { grace.cancel(); });
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
                        auto pc = policy_config(config);
                        const auto rules = pc.rules.size();
                        store.set_policy_config(std::move(pc));
                        log_info("SIGHUP: reloaded " + config.config_path + " (" +
                                 std::to_string(rules) + " prefix rules)");
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

    std::function<void()> ping_watchdog;
    if (auto interval = watchdog_ping_interval()) {
        // Pinged from the loop itself: if the loop wedges, the pings stop.
        ping_watchdog = [&, interval = *interval] {
            notify_watchdog();
            watchdog.expires_after(interval);
            watchdog.async_wait([&](const boost::system::error_code& ec) {
                if (!ec)
                    ping_watchdog();
            });
        };
        ping_watchdog();
    }

    std::function<void()> expire_tick = [&] {
        store.expire_due();
        expiry.expires_after(kExpiryTick);
        expiry.async_wait([&](const boost::system::error_code& ec) {
            if (!ec)
                expire_tick();
        });
    };
    expire_tick();

    server.start();
    if (metrics_http) {
        metrics_http->start();
        log_info("serving metrics at http://" + metrics_http->local_endpoint() + "/metrics");
    }
    log_info("serving " + listener->path() + (listener->activated() ? " (socket activation)" : "") +
             "; protocol " + std::to_string(kProtocolVersion));
    notify_ready("Serving " + listener->path());

    io.run();

    listener->remove_socket_file();
    log_info("stopped");
    return 0;
}

} // namespace cbd
