// Persistence (see persistence.hpp).
#include "daemon/backends/persist/persistence.hpp"

#include "daemon/core/log.hpp"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <cstring>
#include <sys/eventfd.h>
#include <unistd.h>

namespace cbd {

namespace asio = boost::asio;

namespace {

constexpr auto kFailureLogInterval = std::chrono::minutes(1);

std::int64_t epoch_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

} // namespace

Persistence::Persistence(std::unique_ptr<StateFile> file, const PersistenceOptions& options,
                         CircuitStore& store)
    : file_(std::move(file)), options_(options), store_(store), groups_(store) {
    stats_.mode = sync_mode_name(options_.mode);
    stats_.path = file_->path();
}

Persistence::~Persistence() {
    store_.set_change_tracker(nullptr);
    if (writer_.joinable()) {
        {
            std::lock_guard lock(mutex_);
            stop_writer_ = true;
        }
        wake_.notify_one();
        writer_.join();
    }
    done_signal_.reset();
    if (done_fd_ >= 0)
        ::close(done_fd_);
}

std::size_t Persistence::load(std::int64_t wall_now_ms) {
    std::size_t loaded = 0;
    std::size_t from_the_future = 0;
    const auto started = std::chrono::steady_clock::now();
    const std::uint64_t last_generation = file_->load([&](const StoredCircuit& stored) {
        const StoredCircuit* record = &stored;
        StoredCircuit clamped;
        if (stored.circuit && (stored.circuit->snapshot.last_state_change > wall_now_ms ||
                               stored.circuit->snapshot.last_failure_time > wall_now_ms)) {
            clamped = stored;
            auto& snapshot = clamped.circuit->snapshot;
            snapshot.last_state_change = std::min(snapshot.last_state_change, wall_now_ms);
            snapshot.last_failure_time = std::min(snapshot.last_failure_time, wall_now_ms);
            record = &clamped;
            ++from_the_future;
        }
        if (auto error = store_.restore(*record))
            throw StateFileError(
                StateFileError::Kind::Unreadable,
                "state file " + file_->path() +
                    (*error == ErrorCode::TooManyCircuits
                         ? " holds more circuits than --max-circuits allows"
                         : ": row '" + record->key +
                               "' holds a number out of range or an unreadable trip-rule state"));
        ++loaded;
    });
    store_.advance_generation(last_generation);
    store_.set_change_tracker(this);
    if (from_the_future > 0)
        log_warn(std::to_string(from_the_future) + " circuits in " + file_->path() +
                 " had times later than the wall clock now (it stepped back since they were "
                 "written); their times are now");
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started);
    log_info("loaded " + std::to_string(loaded) + " circuits from " + file_->path() + " in " +
             std::to_string(took.count()) + " ms (sync " +
             std::string(sync_mode_name(options_.mode)) + ")");
    return loaded;
}

void Persistence::start(asio::io_context& io) {
    io_ = &io;
    if (options_.mode == SyncMode::Off)
        return;
    if (options_.mode == SyncMode::Always) {
        done_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (done_fd_ < 0)
            throw StateFileError(StateFileError::Kind::Unwritable,
                                 std::string("cannot create an eventfd: ") + std::strerror(errno));
        done_signal_.emplace(io, ::dup(done_fd_));
    }
    writer_ = std::thread([this] { writer_main(); });
    if (options_.mode != SyncMode::Batch)
        return;
    timer_.emplace(io);
    // Re-armed from its own handler until stop_timer().
    struct Tick {
        Persistence* self;
        void operator()(const boost::system::error_code& ec) const {
            if (ec || self->stopped_)
                return;
            self->batch_tick();
            self->timer_->expires_after(self->options_.interval);
            self->timer_->async_wait(*this);
        }
    };
    timer_->expires_after(options_.interval);
    timer_->async_wait(Tick{this});
}

void Persistence::before_change(std::string_view key) {
    if (options_.mode != SyncMode::Always || io_ == nullptr) {
        if (dirty_.find(key) == dirty_.end())
            dirty_.emplace(key);
        return;
    }
    if (!groups_.before_change(key))
        return; // an undo's restore
    if (!commit_posted_ && !groups_.committing()) {
        commit_posted_ = true;
        // Runs after the handlers already queued in this turn of the loop
        // (the other sockets that were ready): they join this group.
        asio::post(*io_, [this] { start_commit(); });
    }
}

void Persistence::when_durable(std::function<void(const KeySet*)> done) {
    groups_.when_durable(std::move(done));
}

std::vector<StoredCircuit> Persistence::records_for(const KeySet& keys) const {
    std::vector<StoredCircuit> records;
    records.reserve(keys.size());
    for (const auto& key : keys)
        records.push_back(store_.stored(key));
    return records;
}

void Persistence::start_commit() {
    commit_posted_ = false;
    if (!groups_.start())
        return;
    hand_to_writer(groups_.committing_records());
    wait_for_writer();
}

void Persistence::wait_for_writer() {
    if (signal_armed_)
        return;
    signal_armed_ = true;
    done_signal_->async_read_some(asio::buffer(&done_count_, sizeof done_count_),
                                  [this](const boost::system::error_code& ec, std::size_t) {
                                      signal_armed_ = false;
                                      if (ec)
                                          return;
                                      std::optional<std::string> error;
                                      std::size_t rows = 0;
                                      bool finished = false;
                                      {
                                          std::lock_guard lock(mutex_);
                                          if (job_running_ && job_done_) {
                                              job_running_ = job_done_ = false;
                                              error = std::move(job_error_);
                                              job_error_.reset();
                                              rows = job_.size();
                                              job_.clear();
                                              finished = true;
                                          }
                                      }
                                      if (finished)
                                          on_commit_done(std::move(error), rows);
                                      // While stopping, stop listening once idle, so the loop can
                                      // end (start_commit() listens again should a late change
                                      // come).
                                      if (!(stopped_ && !groups_.committing()))
                                          wait_for_writer();
                                  });
}

void Persistence::on_commit_done(std::optional<std::string> error, std::size_t rows) {
    if (!error) {
        note_success(rows);
        groups_.committed();
        if (groups_.forming_has_work())
            start_commit();
        return;
    }
    note_failure(*error, rows);
    // Undo in memory what did not reach the disk: nothing is answered as
    // done that a crash could lose.
    stats_.undone += groups_.failed();
}

void Persistence::hand_to_writer(std::vector<StoredCircuit> records) {
    std::lock_guard lock(mutex_);
    job_ = std::move(records);
    job_generation_ = store_.last_generation();
    job_ready_ = job_running_ = true;
    job_done_ = false;
    wake_.notify_one();
}

void Persistence::batch_tick() {
    bool collected = false;
    std::optional<std::string> error;
    std::vector<StoredCircuit> finished;
    {
        std::lock_guard lock(mutex_);
        if (job_running_ && job_done_) {
            job_running_ = job_done_ = false;
            error = std::move(job_error_);
            job_error_.reset();
            finished = std::move(job_);
            job_.clear();
            collected = true;
        }
        if (job_running_) {
            stats_.pending = dirty_.size();
            return; // still writing: the keys wait for the next tick
        }
    }
    if (collected) {
        if (error) {
            note_failure(*error, finished.size());
            for (const auto& r : finished) // written again, as they are then
                if (dirty_.find(r.key) == dirty_.end())
                    dirty_.emplace(r.key);
        } else {
            note_success(finished.size());
        }
    }
    stats_.pending = dirty_.size();
    if (dirty_.empty())
        return;
    auto records = records_for(dirty_);
    dirty_.clear();
    hand_to_writer(std::move(records));
}

void Persistence::writer_main() {
    std::unique_lock lock(mutex_);
    for (;;) {
        wake_.wait(lock, [this] { return stop_writer_ || job_ready_; });
        if (!job_ready_)
            return; // stopping, and nothing was handed over
        job_ready_ = false;
        // The loop does not touch job_ while job_running_ and not done.
        lock.unlock();
        auto error = file_->write(job_, job_generation_);
        lock.lock();
        job_error_ = std::move(error);
        job_done_ = true;
        if (done_fd_ >= 0) {
            const std::uint64_t one = 1;
            [[maybe_unused]] auto n = ::write(done_fd_, &one, sizeof one);
        }
        if (stop_writer_)
            return;
    }
}

void Persistence::stop_timer() {
    stopped_ = true;
    if (timer_)
        timer_->cancel();
    // Durable mode keeps committing while sessions flush their last
    // replies; with nothing in flight it stops listening to the writer.
    if (done_signal_ && !groups_.committing() && !commit_posted_)
        done_signal_->cancel();
}

bool Persistence::shut_down() {
    stop_timer();
    if (done_signal_)
        done_signal_->cancel();
    if (writer_.joinable()) {
        {
            std::lock_guard lock(mutex_);
            stop_writer_ = true;
        }
        wake_.notify_one();
        writer_.join();
        // A job handed over but not collected: if it did not commit, its
        // keys are written below (with what they hold now).
        if (job_running_) {
            if (job_done_ && !job_error_)
                note_success(job_.size());
            else
                for (const auto& r : job_)
                    dirty_.emplace(r.key);
            job_running_ = job_done_ = job_ready_ = false;
        }
    }
    for (const auto& key : groups_.abandon())
        dirty_.emplace(key);
    store_.set_change_tracker(nullptr);
    auto records = records_for(dirty_);
    if (auto error = file_->write(records, store_.last_generation())) {
        log_error("state file " + file_->path() + ": the final write of " +
                  std::to_string(records.size()) + " changed circuits failed: " + *error +
                  "; those changes are lost");
        return false;
    }
    dirty_.clear();
    log_info("wrote " + std::to_string(records.size()) + " changed circuits to " + file_->path());
    file_.reset(); // closes the file, checkpointing the log into it
    return true;
}

void Persistence::note_success(std::size_t rows) {
    stats_.commits += 1;
    stats_.written += rows;
    stats_.last_commit_ms = epoch_ms();
    if (!stats_.healthy) {
        stats_.healthy = true;
        log_warn("state file " + file_->path() + ": writes work again");
        last_failure_log_ = {};
    }
}

void Persistence::note_failure(const std::string& why, std::size_t rows) {
    stats_.failures += 1;
    stats_.healthy = false;
    stats_.last_error = why;
    const auto now = std::chrono::steady_clock::now();
    if (last_failure_log_ != std::chrono::steady_clock::time_point{} &&
        now - last_failure_log_ < kFailureLogInterval)
        return;
    last_failure_log_ = now;
    const std::string consequence =
        options_.mode == SyncMode::Always
            ? "; those changes were undone and answered storage_unavailable"
            : "; cbd keeps serving from memory and retries every " +
                  std::to_string(options_.interval.count()) + " ms";
    log_error("state file " + file_->path() + ": cannot write " + std::to_string(rows) +
              " changed circuits: " + why + consequence + " (" + std::to_string(stats_.failures) +
              " failed commits so far)");
}

} // namespace cbd
