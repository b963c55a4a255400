// Persistence (see persistence.hpp).
#include "daemon/persistence.hpp"

#include "daemon/log.hpp"

#include <boost/asio/post.hpp>

namespace cbd {

namespace asio = boost::asio;

namespace {

constexpr auto kFailureLogInterval = std::chrono::minutes(1);

std::int64_t epoch_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

} // namespace

std::string_view sync_mode_name(SyncMode mode) {
    switch (mode) {
    case SyncMode::Always:
        return "always";
    case SyncMode::Batch:
        return "batch";
    case SyncMode::Off:
        return "off";
    }
    return "batch";
}

std::optional<SyncMode> parse_sync_mode(std::string_view name) {
    for (auto mode : {SyncMode::Always, SyncMode::Batch, SyncMode::Off})
        if (sync_mode_name(mode) == name)
            return mode;
    return std::nullopt;
}

Persistence::Persistence(std::unique_ptr<StateFile> file, const PersistenceOptions& options,
                         CircuitStore& store, DaemonStats& stats)
    : file_(std::move(file)), options_(options), store_(store), stats_(stats.storage) {
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
}

std::size_t Persistence::load() {
    std::size_t loaded = 0;
    const auto started = std::chrono::steady_clock::now();
    const std::uint64_t last_generation = file_->load([&](const StoredCircuit& record) {
        if (store_.restore(record))
            throw StateFileError(StateFileError::Kind::Unreadable,
                                 "state file " + file_->path() +
                                     " holds more circuits than --max-circuits allows");
        ++loaded;
    });
    store_.advance_generation(last_generation);
    store_.set_change_tracker(this);
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started);
    log_info("loaded " + std::to_string(loaded) + " circuits from " + file_->path() + " in " +
             std::to_string(took.count()) + " ms (sync " + std::string(sync_mode_name(options_.mode)) +
             ")");
    return loaded;
}

void Persistence::start(asio::io_context& io) {
    io_ = &io;
    if (options_.mode != SyncMode::Batch)
        return;
    writer_ = std::thread([this] { writer_main(); });
    timer_.emplace(io);
    // Re-armed from its own handler until shut_down() cancels it.
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
    if (undoing_)
        return;
    if (options_.mode != SyncMode::Always || io_ == nullptr) {
        if (dirty_.find(key) == dirty_.end())
            dirty_.emplace(key);
        return;
    }
    if (turn_.find(key) == turn_.end())
        turn_.emplace(std::string(key), store_.stored(key));
    if (!commit_posted_) {
        commit_posted_ = true;
        // Runs after the handlers already queued in this turn of the loop
        // (the other sockets that were ready): they join this group.
        asio::post(*io_, [this] { commit_turn(); });
    }
}

void Persistence::when_durable(std::function<void(const KeySet*)> done) {
    waiters_.push_back(std::move(done));
}

std::vector<StoredCircuit> Persistence::records_for(const KeySet& keys) const {
    std::vector<StoredCircuit> records;
    records.reserve(keys.size());
    for (const auto& key : keys)
        records.push_back(store_.stored(key));
    return records;
}

void Persistence::commit_turn() {
    commit_posted_ = false;
    std::vector<StoredCircuit> records;
    records.reserve(turn_.size());
    for (const auto& [key, before] : turn_)
        records.push_back(store_.stored(key));
    auto waiters = std::move(waiters_);
    waiters_.clear();
    if (auto error = file_->write(records, store_.last_generation())) {
        note_failure(*error, records.size());
        // Undo in memory what did not reach the disk: nothing is answered
        // as done that a crash could lose.
        KeySet undone;
        undoing_ = true;
        for (auto& [key, before] : turn_) {
            store_.restore(before);
            undone.insert(key);
        }
        undoing_ = false;
        stats_.undone += turn_.size();
        turn_.clear();
        for (auto& w : waiters)
            w(&undone);
        return;
    }
    note_success(records.size());
    turn_.clear();
    for (auto& w : waiters)
        w(nullptr);
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
    std::lock_guard lock(mutex_);
    if (job_running_ || dirty_.empty())
        return;
    job_ = records_for(dirty_);
    job_generation_ = store_.last_generation();
    dirty_.clear();
    job_ready_ = job_running_ = true;
    wake_.notify_one();
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
        if (stop_writer_)
            return;
    }
}

void Persistence::stop_timer() {
    stopped_ = true;
    if (timer_)
        timer_->cancel();
}

bool Persistence::shut_down() {
    stop_timer();
    if (writer_.joinable()) {
        {
            std::lock_guard lock(mutex_);
            stop_writer_ = true;
        }
        wake_.notify_one();
        writer_.join();
        // A job handed over but not collected: its keys are written below.
        if (job_running_) {
            if (job_done_ && !job_error_)
                note_success(job_.size());
            else
                for (const auto& r : job_)
                    dirty_.emplace(r.key);
            job_running_ = job_done_ = job_ready_ = false;
        }
    }
    for (const auto& [key, before] : turn_)
        dirty_.emplace(key);
    turn_.clear();
    store_.set_change_tracker(nullptr);
    auto records = records_for(dirty_);
    if (auto error = file_->write(records, store_.last_generation())) {
        log_error("state file " + file_->path() + ": the final write of " +
                  std::to_string(records.size()) + " changed circuits failed: " + *error +
                  "; those changes are lost");
        return false;
    }
    dirty_.clear();
    log_info("wrote " + std::to_string(records.size()) + " changed circuits to " +
             file_->path());
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
              " changed circuits: " + why + consequence + " (" +
              std::to_string(stats_.failures) + " failed commits so far)");
}

} // namespace cbd
