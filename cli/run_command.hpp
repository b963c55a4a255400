// cbctl run: a circuit breaker around any command. Acquire; if denied, exit
// 75 without running it; if allowed, run it with the terminal's stdio,
// forward SIGINT/SIGTERM, and report its outcome with the acquire's
// generation and permit. If cbd cannot be reached, run anyway (fail open) as
// the reference gateway does with a broken store, unless --fail-closed.
#pragma once

#include "cli/commands.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace cbctl {

inline constexpr int kExitCircuitOpen = 75; // EX_TEMPFAIL: try again later
inline constexpr int kExitTimedOut = 124;   // as timeout(1)
inline constexpr int kExitCannotExecute = 126;
inline constexpr int kExitNotFound = 127;

struct RunOptions {
    std::string key;
    std::optional<std::chrono::milliseconds> timeout; // kill CMD after this
    std::vector<int> success_codes{0};
    bool fail_closed = false;
    std::vector<std::string> command;
};

int run_guarded(const GlobalOptions& global, const RunOptions& options);

// "0,3" -> {0, 3}; nullopt when malformed or out of 0..255.
std::optional<std::vector<int>> parse_exit_codes(const std::string& text);

} // namespace cbctl
