// The state file: circuits on disk in SQLite (WAL mode), one row per key.
// Only persistence.cpp uses it. It knows the schema and SQLite; it knows
// nothing of modes, timers or the event loop. Errors name the file and say
// why, because they end up in the log of a daemon that refused to start.
//
// Schema (see docs/PROTOCOL.md, "Persistence"):
//   circuits(key TEXT PRIMARY KEY, state TEXT, failure_count, success_count,
//            last_failure_time, last_state_change, generation,
//            pin_state, pin_until, pin_reason, pin_uid, pin_pid, policy TEXT)
//     circuit columns NULL when only a policy override is kept;
//     pin_* NULL when not forced; policy NULL when no override.
//   meta(name TEXT PRIMARY KEY, value INTEGER): "last_generation"; the
//     generation counter is the larger of it and the rows' largest
//     generation, so it is written only when no written row carries it.
// PRAGMA application_id marks the file as cbd's; user_version is the schema.
#pragma once

#include "daemon/breaker/circuit_store.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

struct sqlite3;
struct sqlite3_stmt;

namespace cbd {

// Why the state file cannot be used; the message names the file.
class StateFileError : public std::runtime_error {
  public:
    enum class Kind {
        Unreadable, // corrupt, not a database, not cbd's, a row that makes no sense
        Unwritable, // cannot create or write (permissions, read-only, locked)
    };
    StateFileError(Kind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
    Kind kind() const { return kind_; }

  private:
    Kind kind_;
};

struct StateFileOptions {
    std::string path;
    // Test hook: while this file exists, every write and sync of the state
    // file fails (with SQLITE_FULL when the file says "full", an I/O error
    // otherwise). Empty: no hook. Set by cbd from $CBD_STORAGE_FAULT_FILE.
    std::string fault_file;
};

class StateFile {
  public:
    // Opens (creating when absent) and checks the file: that it is a cbd
    // state file of a schema we know, that it passes SQLite's quick_check,
    // and that we can write it. Nothing is written to an existing file that
    // fails those checks. Holds an exclusive lock until closed, so two
    // daemons never share one file. Throws StateFileError.
    static std::unique_ptr<StateFile> open(const StateFileOptions& options);
    ~StateFile();
    StateFile(const StateFile&) = delete;
    StateFile& operator=(const StateFile&) = delete;

    const std::string& path() const { return path_; }

    // Calls `visit` for every stored circuit; returns the stored generation
    // counter. Throws StateFileError (Unreadable) on a row that is not valid.
    std::uint64_t load(const std::function<void(const StoredCircuit&)>& visit);

    // Writes `records` (an empty record deletes its key) and the generation
    // counter in one transaction, synced before it returns. Returns the
    // error text on failure (the transaction is rolled back: nothing of it
    // is on disk).
    std::optional<std::string> write(const std::vector<StoredCircuit>& records,
                                     std::uint64_t last_generation);

    // Moves a state file that could not be read (and its -wal and -shm)
    // aside to PATH.corrupt-<epoch seconds>; returns the new name.
    static std::string move_aside(const std::string& path);

  private:
    StateFile(sqlite3* db, std::string path);
    void prepare();
    std::string error_text() const;

    sqlite3* db_;
    std::string path_;
    sqlite3_stmt* upsert_ = nullptr;
    sqlite3_stmt* remove_ = nullptr;
    sqlite3_stmt* set_generation_ = nullptr;
    std::uint64_t meta_generation_ = 0; // what meta holds now
};

} // namespace cbd
