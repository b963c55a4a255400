// cbctl: parses the command line and runs one command (see commands.hpp).
#include "cli/commands.hpp"
#include "cli/exit_codes.hpp"
#include "common/protocol.hpp"
#include "common/socket_path.hpp"

#include <CLI/CLI.hpp>
#include <iostream>
#include <unistd.h>

namespace {

constexpr const char* kExitCodesHelp = R"(Exit codes:
  0  done
  1  cbd answered with an error (its code and message are on stderr)
  2  usage error
  3  cbd unreachable, connection lost, or timed out)";

} // namespace

int main(int argc, char** argv) {
    using namespace cbctl;

    CLI::App app{"cbctl: read and change circuit-breaker state held by cbd."};
    app.set_version_flag("--version", std::string("cbctl ") + std::string(cbd::kVersion) +
                                          " (protocol " + std::to_string(cbd::kProtocolVersion) +
                                          ")");
    app.footer(kExitCodesHelp);
    app.require_subcommand(1);

    std::string socket_flag;
    long timeout_ms = 5000;
    app.add_option("--socket", socket_flag,
                   "cbd's socket (default: $CBD_SOCKET, else $XDG_RUNTIME_DIR/cbd/cbd.sock for "
                   "non-root users, else /run/cbd/cbd.sock)");
    app.add_option("--timeout", timeout_ms, "Milliseconds to wait for cbd")
        ->capture_default_str()
        ->check(CLI::Range(1L, 3'600'000L));

    const std::vector<std::string> snapshot_fields = {
        "state", "failureCount", "successCount", "lastFailureTime", "lastStateChange"};

    // The command that runs once parsing succeeded.
    std::function<int(const GlobalOptions&)> command;

    std::string key, to, field;
    auto add_key_command = [&](const std::string& name, const std::string& help) {
        auto* sub = app.add_subcommand(name, help);
        sub->add_option("KEY", key, "Circuit key")->required();
        return sub;
    };
    auto add_field_option = [&](CLI::App* sub) {
        sub->add_option("--field", field, "Print only this snapshot field, bare")
            ->check(CLI::IsMember(snapshot_fields));
    };

    auto snapshot_command = [&](const std::string& op) {
        return [&, op](const GlobalOptions& g) {
            return run_single(g, key_request(op, key), Output::Snapshot, field);
        };
    };

    auto* get = add_key_command("get", "Print a circuit's snapshot (created if unknown)");
    add_field_option(get);
    get->callback([&] { command = snapshot_command("get"); });

    auto* success = add_key_command("success", "Record a success; print the new snapshot");
    add_field_option(success);
    success->callback([&] { command = snapshot_command("success"); });

    auto* failure = add_key_command("failure", "Record a failure; print the new snapshot");
    add_field_option(failure);
    failure->callback([&] { command = snapshot_command("failure"); });

    auto* transition = add_key_command("transition", "Move a circuit to STATE");
    transition->add_option("STATE", to, "closed, open or half-open")->required();
    add_field_option(transition);
    transition->callback([&] {
        command = [&](const GlobalOptions& g) {
            return run_single(g, key_request("transition", key, to), Output::Snapshot, field);
        };
    });

    auto* reset = add_key_command("reset", "Remove a circuit; prints nothing");
    reset->callback([&] {
        command = [&](const GlobalOptions& g) {
            return run_single(g, key_request("reset", key), Output::Nothing, "");
        };
    });

    auto* ping = app.add_subcommand("ping", "Check that cbd answers; print its version");
    ping->callback([&] {
        command = [](const GlobalOptions& g) {
            return run_single(g, "{\"op\":\"ping\"}\n", Output::Reply, "");
        };
    });

    auto* pipe = app.add_subcommand(
        "pipe", "Send NDJSON requests from stdin, pipelined; print every reply line. "
                "Exits 1 if any reply was an error");
    pipe->callback([&] {
        command = [](const GlobalOptions& g) { return run_pipe(g, STDIN_FILENO); };
    });

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        // CLI11 uses 0 for --help/--version and 100+ for parse errors.
        return app.exit(e) == 0 ? kExitOk : kExitUsage;
    }

    GlobalOptions options;
    options.socket_path = cbd::resolve_socket_path(socket_flag);
    options.timeout = std::chrono::milliseconds(timeout_ms);
    return command(options);
}
