// cbd: parses flags into a DaemonConfig and runs the daemon.
#include "common/protocol.hpp"
#include "common/socket_path.hpp"
#include "daemon/daemon.hpp"
#include "daemon/listener.hpp"
#include "daemon/log.hpp"

#include <CLI/CLI.hpp>
#include <iostream>

int main(int argc, char** argv) {
    CLI::App app{"cbd: circuit-breaker state for every process on this machine, served as "
                 "newline-delimited JSON on a Unix socket."};
    app.set_version_flag("--version", std::string("cbd ") + std::string(cbd::kVersion) +
                                          " (protocol " + std::to_string(cbd::kProtocolVersion) +
                                          ")");

    std::string socket_flag;
    std::string socket_mode = "0660";
    std::size_t max_line_bytes = cbd::kDefaultMaxLineBytes;
    std::size_t max_circuits = cbd::kDefaultMaxCircuits;
    std::string log_level = "info";

    app.add_option("--socket", socket_flag,
                   "Socket path (default: $CBD_SOCKET, else $XDG_RUNTIME_DIR/cbd/cbd.sock for "
                   "non-root users, else /run/cbd/cbd.sock)");
    app.add_option("--socket-mode", socket_mode, "Octal mode of the socket file")
        ->capture_default_str();
    app.add_option("--max-line-bytes", max_line_bytes, "Longest request line accepted")
        ->capture_default_str()
        ->check(CLI::Range(std::size_t{64}, std::size_t{64} * 1024 * 1024));
    app.add_option("--max-circuits", max_circuits, "Most circuits held at once")
        ->capture_default_str()
        ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 40));
    app.add_option("--log-level", log_level, "error, warn, info or debug")
        ->capture_default_str()
        ->check(CLI::IsMember({"error", "warn", "info", "debug"}));

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
    try {
        config.socket_mode = cbd::parse_socket_mode(socket_mode);
    } catch (const cbd::StartupError& e) {
        std::cerr << "cbd: " << e.what() << "\n";
        return 2;
    }
    return cbd::run_daemon(config);
}
