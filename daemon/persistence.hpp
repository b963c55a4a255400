// Persistence: keeps the state file in step with the store, in the manner of
// Redis's appendfsync. Memory stays the authority; the store tells us (as its
// ChangeTracker) which keys change, and we write those keys' current records.
//
//   always  Group commit on the event loop. Every change made in one turn of
//           the loop goes into one transaction, committed and synced at the
//           end of that turn; sessions hold their replies until then (see
//           CommitGate). Waiting on the disk here is the point: a reply means
//           the change is durable. While the loop waits, new requests queue in
//           the sockets and form the next group, so durable throughput grows
//           with the number of clients. A failed commit undoes the group's
//           changes in memory (from before-images taken at the first change
//           of each key) and its replies become storage_unavailable.
//   batch   Changed keys are collected and written every interval by a writer
//           thread, off the loop. A crash loses at most about one interval.
//           A failed write is retried at the next tick; the keys stay dirty.
//   off     Written at clean shutdown only.
//
// Every mode writes everything still unwritten at clean shutdown.
#pragma once

#include "daemon/circuit_store.hpp"
#include "daemon/commit_gate.hpp"
#include "daemon/state_file.hpp"
#include "daemon/stats.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

namespace cbd {

enum class SyncMode : std::uint8_t { Always, Batch, Off };
std::string_view sync_mode_name(SyncMode mode);
std::optional<SyncMode> parse_sync_mode(std::string_view name);

struct PersistenceOptions {
    StateFileOptions file;
    SyncMode mode = SyncMode::Batch;
    std::chrono::milliseconds interval{100}; // batch mode
};

class Persistence final : public ChangeTracker, public CommitGate {
  public:
    // Takes an open state file; call load() before serving.
    Persistence(std::unique_ptr<StateFile> file, const PersistenceOptions& options,
                CircuitStore& store, DaemonStats& stats);
    ~Persistence();
    Persistence(const Persistence&) = delete;
    Persistence& operator=(const Persistence&) = delete;

    // Fills the store from the file and starts tracking its changes.
    // Returns how many keys were loaded. Throws StateFileError.
    std::size_t load();
    // Starts the batch timer and writer thread (batch mode), or the group
    // commits (always mode) on `io`.
    void start(boost::asio::io_context& io);
    // Stops the batch timer, so the loop can finish (call on the loop).
    void stop_timer();
    // Stops the writer and writes out everything not yet written. Returns
    // false (after logging why) when that final write failed.
    bool shut_down();

    void before_change(std::string_view key) override;
    bool pending() const override { return !turn_.empty(); }
    void when_durable(std::function<void(const KeySet* undone)> done) override;

  private:
    // always: commit the turn's changes, then release the waiting sessions.
    void commit_turn();
    // batch: collect the writer's last result, hand it the next batch.
    void batch_tick();
    void writer_main();
    std::vector<StoredCircuit> records_for(const KeySet& keys) const;
    void note_success(std::size_t rows);
    void note_failure(const std::string& why, std::size_t rows);

    std::unique_ptr<StateFile> file_;
    PersistenceOptions options_;
    CircuitStore& store_;
    StorageStats& stats_;
    boost::asio::io_context* io_ = nullptr;

    // always: the keys changed this turn and what they held before it.
    std::unordered_map<std::string, StoredCircuit, KeyHash, std::equal_to<>> turn_;
    bool commit_posted_ = false;
    bool undoing_ = false; // restores during an undo are not changes
    std::vector<std::function<void(const KeySet*)>> waiters_;

    // batch and off: keys changed since they were last handed to the writer.
    KeySet dirty_;

    // batch: the writer thread and the one job it may hold.
    std::optional<boost::asio::steady_timer> timer_;
    bool stopped_ = false;
    std::thread writer_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stop_writer_ = false;
    bool job_ready_ = false;   // a job is waiting for the writer
    bool job_running_ = false; // handed off and not yet collected by the loop
    bool job_done_ = false;    // the writer finished it
    std::vector<StoredCircuit> job_;
    std::uint64_t job_generation_ = 0;
    std::optional<std::string> job_error_;

    // Failure logging: the first failure, then at most one line a minute,
    // and one line when writes work again.
    std::chrono::steady_clock::time_point last_failure_log_{};
};

} // namespace cbd
