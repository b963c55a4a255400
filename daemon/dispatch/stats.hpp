// Counters for `stats` and the Prometheus metrics. Every part of the daemon
// bumps its own counters here; nothing is computed by walking the circuits.
#pragma once

#include "common/protocol.hpp"
#include "daemon/breaker/circuit_store.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace cbd {

inline constexpr std::size_t kTransitionCauseCount = 12;

// How persistence is doing (all zero and `mode` empty when memory-only).
struct StorageStats {
    std::string mode; // "always", "batch", "off"; empty without --state-file
    std::string path;
    bool healthy = true;             // the last commit succeeded
    std::uint64_t commits = 0;       // transactions committed
    std::uint64_t failures = 0;      // transactions that failed
    std::uint64_t written = 0;       // circuit rows written by them
    std::uint64_t undone = 0;        // durable mode: changes undone by failed commits
    std::uint64_t pending = 0;       // keys changed and not yet committed (as of the last tick)
    std::int64_t last_commit_ms = 0; // epoch ms of the last successful commit
    std::string last_error;          // of the last failure, kept after recovery
};

// The Redis backend's connection (kind empty with the memory backend).
struct BackendStats {
    std::string kind;    // "redis"
    std::string address; // unix:///…, tcp://… or sentinel://…/NAME, as configured
    bool up = false;
    std::uint64_t disconnects = 0; // times the connection was lost or never came up
    std::uint64_t unavailable = 0; // operations answered backend_unavailable
    std::string last_error;
    // The Redis cbd uses now (with sentinel://, the master the sentinels
    // named; empty until one is known), and how often it moved to another.
    std::string master;
    bool sentinel = false;
    std::uint64_t failovers = 0;
    // --redis-min-replicas, and changes answered backend_unavailable because
    // fewer replicas acknowledged them in time (counted in `unavailable` too).
    std::size_t min_replicas = 0;
    std::uint64_t replication_failures = 0;
    // Other live hosts on the same Redis and prefix whose policy digest
    // (defaults and prefix rules) differs from this one's (policy_digest.hpp).
    std::vector<std::string> policy_mismatch_hosts;
    std::string policy_digest; // this daemon's
};

struct DaemonStats {
    std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();

    std::array<std::uint64_t, kOpCount> requests{};      // by Op, requests that parsed
    std::array<std::uint64_t, kErrorCodeCount> errors{}; // by ErrorCode, error replies

    std::uint64_t connections_current = 0;
    std::uint64_t connections_total = 0;
    std::uint64_t connections_refused = 0;

    std::uint64_t watchers = 0;
    std::uint64_t events_emitted = 0; // event lines queued to watchers
    std::uint64_t events_dropped = 0; // lost to overflowing watchers

    StorageStats storage;
    BackendStats backend;

    // [from][to][cause]
    std::array<std::array<std::array<std::uint64_t, kTransitionCauseCount>, 3>, 3> transitions{};

    void count_transition(const TransitionRecord& t) {
        transitions[static_cast<std::size_t>(t.from)][static_cast<std::size_t>(t.to)]
                   [static_cast<std::size_t>(t.cause)] += 1;
    }
};

// Resident set size of this process in bytes (from /proc), 0 if unknown.
std::uint64_t resident_memory_bytes();

} // namespace cbd
