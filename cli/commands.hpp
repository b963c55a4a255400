// The cbctl commands. Each returns the process exit status (exit_codes.hpp)
// and writes results to stdout, diagnostics to stderr.
#pragma once

#include <chrono>
#include <functional>
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
    Reply,    // the reply without "ok" (acquire, report, force, configure, ...)
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
// How `pipe` treats lines and replies; `import` is `pipe` with other hooks.
struct PipeHooks {
    // Turns input line `n` (1-based) into a request line (without "\n"), or
    // returns an error message (the line is then not sent, and counts as a
    // failure). Unset: lines go as they are.
    std::function<std::optional<std::string>(std::size_t n, std::string_view line,
                                             std::string& request)>
        rewrite;
    // Sees the reply to input line `n`; returns whether it is a success.
    // Unset: every reply line is printed to stdout.
    std::function<bool(std::size_t n, const std::string& reply)> on_reply;
};
int run_pipe(const GlobalOptions& options, int input_fd, const PipeHooks& hooks = {});

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
