// export and import (see state_commands.hpp).
#include "cli/state_commands.hpp"

#include "cli/connection.hpp"
#include "cli/exit_codes.hpp"
#include "cli/observe_commands.hpp"

#include <iostream>
#include <nlohmann/json.hpp>

namespace cbctl {

using Json = nlohmann::ordered_json;

int run_export(const GlobalOptions& g, const std::string& prefix) {
    int exit_code = kExitOk;
    std::size_t exported = 0;
    try {
        auto conn = Connection::open(g.socket_path, Clock::now() + g.timeout);
        std::string after;
        for (;;) {
            Json request = {{"op", "export"}, {"limit", 1000}};
            if (!prefix.empty())
                request["prefix"] = prefix;
            if (!after.empty())
                request["after"] = after;
            auto reply =
                ask(conn, g, request.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n",
                    exit_code);
            if (!reply)
                return exit_code;
            for (const auto& c : (*reply)["circuits"]) {
                std::cout << c.dump(-1, ' ', false, Json::error_handler_t::replace) << "\n";
                ++exported;
            }
            if (!(*reply)["next"].is_string())
                break;
            after = (*reply)["next"].get<std::string>();
        }
    } catch (const ConnectionError& e) {
        std::cout.flush();
        std::cerr << "cbctl: " << e.what() << " (after " << exported << " circuits)\n";
        return kExitUnreachable;
    }
    std::cout.flush();
    if (!std::cout) {
        std::cerr << "cbctl: could not write the export to stdout\n";
        return kExitDaemonError;
    }
    return kExitOk;
}

int run_import(const GlobalOptions& g, int input_fd) {
    std::size_t imported = 0, failed = 0;
    PipeHooks hooks;
    hooks.rewrite = [&](std::size_t, std::string_view line,
                        std::string& request) -> std::optional<std::string> {
        Json record = Json::parse(line, nullptr, false);
        if (record.is_discarded() || !record.is_object()) {
            ++failed;
            return std::string("not a JSON object (expected what `cbctl export` writes)");
        }
        // The daemon validates the rest; an op or id in the line is ours to set.
        record.erase("id");
        record["op"] = "import";
        request = record.dump(-1, ' ', false, Json::error_handler_t::replace);
        return std::nullopt;
    };
    hooks.on_reply = [&](std::size_t n, const std::string& line) {
        Json reply = Json::parse(line, nullptr, false);
        if (!reply.is_discarded() && reply.is_object() && reply.value("ok", false)) {
            ++imported;
            return true;
        }
        ++failed;
        const Json error = reply.is_object() && reply.contains("error") ? reply["error"] : Json();
        std::cerr << "cbctl: line " << n << ": "
                  << (error.is_object()
                          ? error.value("code", "error") + ": " + error.value("message", "")
                          : "unreadable reply: " + line)
                  << "\n";
        return false;
    };
    const int code = run_pipe(g, input_fd, hooks);
    std::cerr << "cbctl: imported " << imported << " circuits"
              << (failed ? ", " + std::to_string(failed) + " lines failed" : std::string()) << "\n";
    return code;
}

} // namespace cbctl
