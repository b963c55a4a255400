// cbctl's commands for operators: watch, list, policy, stats, metrics.
// Readable output on a terminal, JSON (lines) otherwise, so the same command
// serves a person and a script; and the text for people they share.
#pragma once

#include "cli/commands.hpp"
#include "cli/connection.hpp"

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace cbctl {

struct WatchOptions {
    std::string key;    // empty: all circuits, or the prefix
    std::string prefix; // used when set and key is empty
    bool has_prefix = false;
    bool text = false; // --format text
};
int run_watch(const GlobalOptions& g, const WatchOptions& o);

struct ListOptions {
    std::string prefix;
    std::string state;
    bool json = false; // forced JSON lines even on a terminal
    // Only the keys, one a line, never a table: for shell completion and
    // scripts (a key holds no newline: the protocol refuses control bytes).
    bool keys = false;
};
int run_list(const GlobalOptions& g, const ListOptions& o);

// Sends one request line on `conn` and returns its reply when ok; otherwise
// prints why to stderr and returns nullopt with `exit_code` set.
std::optional<nlohmann::ordered_json> ask(Connection& conn, const GlobalOptions& g,
                                          const std::string& line, int& exit_code);
// The same on a connection of its own.
std::optional<nlohmann::ordered_json> ask_once(const GlobalOptions& g, const std::string& line,
                                               int& exit_code);

struct PolicyOptions {
    std::string key;
    // --field: only these fields' values, bare, one a line, in this order
    // (names are checked against the policy's fields before we get here).
    std::vector<std::string> fields;
    bool json = false; // the reply as JSON even on a terminal
};
// A key's effective policy: a table of field, value and source on a
// terminal, the reply as one JSON line otherwise.
int run_policy(const GlobalOptions& g, const PolicyOptions& o);

int run_stats(const GlobalOptions& g, bool json);
int run_metrics(const GlobalOptions& g, bool per_circuit);

// "2026-11-27 02:26:16.123" in local time; "-" for 0.
std::string human_time(std::int64_t epoch_ms);

// A reply's `forced` (a pin) for a person, with `now_ms` (epoch) to say how
// long it has left: `open until 2026-12-08 01:02:03.000 (in 4m 59s) by uid
// 0 pid 123: "db migration"`, or `open until unforced ...` without a TTL.
std::string pin_text(const nlohmann::ordered_json& forced, std::int64_t now_ms);

} // namespace cbctl
