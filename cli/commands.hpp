// The cbctl commands. Each returns the process exit status (exit_codes.hpp)
// and writes results to stdout, diagnostics to stderr.
#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace cbctl {

struct GlobalOptions {
    std::string socket_path;
    std::chrono::milliseconds timeout{5000};
};

// What a successful reply prints.
enum class Output {
    Snapshot, // the snapshot as one JSON line, or one field of it bare
    Nothing,  // reset
    Reply,    // ping: the reply line
};

// One request, one reply. `field` names a snapshot field to print bare.
int run_single(const GlobalOptions& options, const std::string& request_line, Output output,
               const std::string& field);

// cbctl pipe: NDJSON requests from stdin, sent pipelined; every reply printed.
int run_pipe(const GlobalOptions& options, int input_fd);

// A request line for a key operation. The key is passed through unchanged
// (only JSON's mandatory escapes are applied) so the daemon, the one place
// keys are validated, judges it.
std::string key_request(const std::string& op, const std::string& key,
                        const std::optional<std::string>& to = std::nullopt);

} // namespace cbctl
