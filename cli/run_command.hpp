// cbctl run: a circuit breaker around any command. Acquire; if denied, exit
// 75 without running it; if allowed, run it with the terminal's stdio in a
// process group of its own (given the terminal when cbctl has it), end that
// whole group on --timeout or on SIGINT/SIGTERM to cbctl (the signal, then
// SIGKILL after --kill-after), and report its outcome with the acquire's
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

// The grace period between the signal that asks CMD's group to end and the
// SIGKILL that makes it: long enough for a command to clean up, as
// timeout(1)'s --kill-after is typically set.
inline constexpr std::chrono::milliseconds kDefaultKillAfter{5000};

struct RunOptions {
    std::string key;
    std::optional<std::chrono::milliseconds> timeout; // kill CMD after this
    // Once CMD's group was sent SIGTERM (or a forwarded SIGINT), SIGKILL it
    // this much later if any of it is still alive.
    std::chrono::milliseconds kill_after = kDefaultKillAfter;
    std::vector<int> success_codes{0};
    bool fail_closed = false;
    std::vector<std::string> command;
};

int run_guarded(const GlobalOptions& global, const RunOptions& options);

// "0,3" -> {0, 3}; nullopt when malformed or out of 0..255.
std::optional<std::vector<int>> parse_exit_codes(const std::string& text);

} // namespace cbctl
