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
    Snapshot, // the snapshot as one JSON line (get, success, failure, transition)
    Reply,    // the reply without "ok" (acquire, report, force, policy, ...)
    Line,     // the reply line exactly as received (ping)
    Nothing,  // reset
};

struct SingleRequest {
    std::string line; // the request, "\n" included
    Output output = Output::Snapshot;
    // Print only this field, bare: looked up in the reply, then its snapshot.
    std::string field;
    // acquire: a denial exits 75 (as `cbctl run` does) after printing.
    bool denial_exits_75 = false;
};

// One request, one reply.
int run_single(const GlobalOptions& options, const SingleRequest& request);

// cbctl pipe: NDJSON requests from stdin, sent pipelined; every reply printed.
int run_pipe(const GlobalOptions& options, int input_fd);

// A request line for a key operation. The key is passed through unchanged
// (only JSON's mandatory escapes are applied) so the daemon, the one place
// keys are validated, judges it.
std::string key_request(const std::string& op, const std::string& key,
                        const std::optional<std::string>& to = std::nullopt);

// Appends `,"name":"text"` with `text` escaped as key_request() does.
void append_string_field(std::string& line, const std::string& name, const std::string& text);

// Closes a request begun by key_request(): replaces its final "}\n" with
// the extra fields in `more` (each starting with a comma) and closes again.
std::string with_fields(std::string line, const std::string& more);

} // namespace cbctl
