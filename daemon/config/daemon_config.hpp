// What a start of cbd is given: main.cpp fills it from the flags, and the
// app, the configuration loader and `cbd --check-config` read it.
#pragma once

#include "common/policy.hpp"
#include "common/protocol.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>

namespace cbd {

// How changes reach the state file (--sync; see persistence.hpp).
enum class SyncMode : std::uint8_t { Always, Batch, Off };
std::string_view sync_mode_name(SyncMode mode);
std::optional<SyncMode> parse_sync_mode(std::string_view name);

struct DaemonConfig {
    std::string socket_path;
    mode_t socket_mode = 0660;
    std::size_t max_line_bytes = kDefaultMaxLineBytes;
    std::size_t max_circuits = kDefaultMaxCircuits;
    // Policy defaults from flags; they beat the config file's "defaults".
    PolicyPatch flag_defaults;
    // JSON policy file (--config); empty for none. Re-read on SIGHUP.
    std::string config_path;
    // Most event lines a watcher may have unsent before it is dropped.
    std::size_t watch_queue = kDefaultWatchQueue;
    // The HTTP listener (--http-listen ADDR:PORT; empty for none): metrics,
    // dashboard, read-only API and event stream (see http_server.hpp).
    std::string http_listen;
    bool http_allow_remote = false; // else only a loopback address may be bound
    std::size_t http_max_event_clients =
        32; // /api/events streams at once (kDefaultHttpEventClients)
    // Access groups (names or gids); they beat the config file's.
    std::string writer_group;
    std::string admin_group;
    // Most client connections at once; one more is refused. Per uid, and the
    // reserve kept for write and admin peers: see connection_limits.hpp.
    std::size_t max_connections = 1024;
    std::size_t max_connections_per_uid = 256;
    std::size_t reserved_connections = 64;
    // Close connections with no request line this long (watchers excepted); 0 = never.
    std::chrono::milliseconds idle_timeout{0};
    // Close a connection whose unfinished request line takes longer; 0 = never.
    std::chrono::milliseconds request_timeout{10'000};
    // Persistence: the SQLite state file (empty = memory only) and how
    // changes reach it (see persistence.hpp).
    std::string state_file;
    SyncMode sync_mode = SyncMode::Batch;
    std::chrono::milliseconds sync_interval{100};
    bool move_corrupt_state = false; // else refuse to start on an unreadable file
    std::string storage_fault_file;  // test hook, from $CBD_STORAGE_FAULT_FILE
    // --backend redis: circuits live in Redis at this address (empty: in memory).
    std::string redis_url;
    std::string redis_password; // read from --redis-password-file
    std::string redis_prefix = "cbd:";
    // With redis_url sentinel://...: the sentinels' password (AUTH), if any.
    std::string redis_sentinel_password;
    // --redis-min-replicas: replicas that must have a change before it is
    // acknowledged (WAIT); 0 = the master's word.
    std::size_t redis_min_replicas = 0;
    std::chrono::milliseconds backend_timeout{1000};
    // --test-clock FILE: the time comes from FILE (tests only; FileClock).
    std::string test_clock_file;
};

} // namespace cbd
