// Persistence: keeps the state file in step with the store, in the manner of
// Redis's appendfsync. Memory stays the authority; the store tells us (as its
// ChangeTracker) which keys change, and we write those keys' current records.
//
//   always  Group commit. Every change made while no commit is running goes
//           into the next transaction; the writer thread commits and syncs
//           it while the loop goes on serving and gathering the next group,
//           so durable throughput grows with the number of clients and the
//           loop never waits on the disk. Replies that may reflect changes
//           not yet durable are held by their sessions until they are (see
//           CommitGate). A failed commit undoes in memory the changes of its
//           group and of the group gathered since (from before-images taken
//           at each key's first change), and those replies become
//           storage_unavailable errors.
//   batch   Changed keys are collected and written every interval by a writer
//           thread, off the loop. A tick that finds the last write still
//           running hands nothing over, so a crash loses up to one interval,
//           plus the time a write took when it took longer than one.
//           A failed write is retried at the next tick; the keys stay dirty.
//   off     Written at clean shutdown only.
//
// Every mode writes everything still unwritten at clean shutdown.
#pragma once

#include "daemon/backends/persist/group_commit.hpp"
#include "daemon/backends/persist/state_file.hpp"
#include "daemon/backends/persist/storage_stats.hpp"
#include "daemon/breaker/circuit_store.hpp"
#include "daemon/config/daemon_config.hpp"
#include "daemon/dispatch/commit_gate.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
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

struct PersistenceOptions {
    StateFileOptions file;
    SyncMode mode = SyncMode::Batch;
    std::chrono::milliseconds interval{100}; // batch mode
};

class Persistence final : public ChangeTracker, public CommitGate {
  public:
    // Takes an open state file; call load() before serving.
    Persistence(std::unique_ptr<StateFile> file, const PersistenceOptions& options,
                CircuitStore& store);
    ~Persistence();
    Persistence(const Persistence&) = delete;
    Persistence& operator=(const Persistence&) = delete;

    // Fills the store from the file and starts tracking its changes.
    // Returns how many keys were loaded. Throws StateFileError.
    // `wall_now_ms` is the wall clock now: a snapshot time later than it
    // is taken as now (the file was written before the wall clock stepped
    // back: see docs/PROTOCOL.md, *Time*), so no circuit waits out a step.
    std::size_t load(std::int64_t wall_now_ms);
    // Starts the batch timer and writer thread (batch mode), or the group
    // commits (always mode) on `io`.
    void start(boost::asio::io_context& io);
    // Called on the loop when the daemon starts stopping: the batch timer
    // ends, and durable mode stops listening to its writer once idle, so the
    // loop can finish.
    void stop_timer();
    // Stops the writer and writes out everything not yet written. Returns
    // false (after logging why) when that final write failed.
    bool shut_down();

    void before_change(std::string_view key) override;
    bool pending() const override { return groups_.pending(); }
    void when_durable(std::function<void(const KeySet* undone)> done) override;

    // The `storage` section of `stats` and the metrics.
    const StorageStats& stats() const { return stats_; }

  private:
    // always: hand the forming group to the writer, unless one is running.
    void start_commit();
    // always: the writer finished the committing group.
    void on_commit_done(std::optional<std::string> error, std::size_t rows);
    void wait_for_writer(); // always: arm the read of the writer's eventfd
    // batch: collect the writer's last result, hand it the next batch.
    void batch_tick();
    // Hands records to the writer thread (which must be idle).
    void hand_to_writer(std::vector<StoredCircuit> records);
    void writer_main();
    std::vector<StoredCircuit> records_for(const KeySet& keys) const;
    void note_success(std::size_t rows);
    void note_failure(const std::string& why, std::size_t rows);

    std::unique_ptr<StateFile> file_;
    PersistenceOptions options_;
    CircuitStore& store_;
    StorageStats stats_;
    boost::asio::io_context* io_ = nullptr;

    // always: the group gathering changes, and the one being committed.
    GroupCommit groups_;
    bool commit_posted_ = false;

    // batch and off: keys changed since they were last handed to the writer.
    KeySet dirty_;
    std::optional<boost::asio::steady_timer> timer_;
    bool stopped_ = false;

    // The writer thread and the one job it may hold. The loop never waits on
    // it: in batch mode the tick polls, in always mode the writer signals an
    // eventfd the loop reads (nothing else crosses threads, so the loop's
    // io_context can stay unlocked).
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
    int done_fd_ = -1; // eventfd, always mode
    std::optional<boost::asio::posix::stream_descriptor> done_signal_;
    std::uint64_t done_count_ = 0;
    bool signal_armed_ = false;

    // Failure logging: the first failure, then at most one line a minute,
    // and one line when writes work again.
    std::chrono::steady_clock::time_point last_failure_log_{};
};

} // namespace cbd
