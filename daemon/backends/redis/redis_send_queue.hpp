// The commands the Redis backend has accepted but not yet sent (docs/REDIS.md,
// "The send queue"). Redis runs one command at a time, so whatever cbd
// sends waits in Redis; a backlog there longer than --backend-timeout
// would time out the oldest command and take every command in flight down
// with the connection. So commands wait here instead, and RedisStore sends
// only a bounded number at a time.
//
// What the queue decides, and nothing else (it is pure: no I/O, the time is
// passed in, tests/unit/redis_test.cpp drives it):
// - the order: first in, first out for each source (a client connection),
//   and round robin between sources, as the session turns are;
// - the bound: at most `capacity` entries wait, and reads at most half of
//   them, so that a read-level peer can never crowd out the writers;
// - the deadlines: each entry has its own; one still waiting at its
//   deadline leaves the queue unsent, so it is surely not applied.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <unordered_map>
#include <utility>

namespace cbd {

template <typename Item> class RedisSendQueue {
  public:
    using Clock = std::chrono::steady_clock;

    struct Entry {
        Item item;
        Clock::time_point deadline;
        bool read = false; // a read-level operation
    };

    enum class Admission : std::uint8_t {
        Queued,
        Full,      // `capacity` entries wait already
        ReadsFull, // a read, and reads hold half the capacity already
    };

    explicit RedisSendQueue(std::size_t capacity) : capacity_(capacity) {}

    Admission push(std::uint64_t source, bool read, Clock::time_point deadline, Item item) {
        if (size_ >= capacity_)
            return Admission::Full;
        if (read && reads_ >= capacity_ / 2)
            return Admission::ReadsFull;
        auto& queue = by_source_[source];
        if (queue.empty())
            turns_.push_back(source);
        queue.push_back(Entry{std::move(item), deadline, read});
        ++size_;
        reads_ += read ? 1 : 0;
        return Admission::Queued;
    }

    // The next entry to send: the head of the source whose turn it is. A
    // source whose head is a read is passed over while `reads_allowed` is
    // false (its later entries wait behind it: a source's order holds).
    std::optional<Entry> pop(bool reads_allowed) {
        for (std::size_t tried = 0, n = turns_.size(); tried < n; ++tried) {
            const std::uint64_t source = turns_.front();
            turns_.pop_front();
            auto it = by_source_.find(source);
            if (!reads_allowed && it->second.front().read) {
                turns_.push_back(source);
                continue;
            }
            Entry entry = std::move(it->second.front());
            it->second.pop_front();
            if (it->second.empty())
                by_source_.erase(it);
            else
                turns_.push_back(source);
            --size_;
            reads_ -= entry.read ? 1 : 0;
            return entry;
        }
        return std::nullopt;
    }

    // Takes out every entry whose deadline is at or before `now` and hands
    // each to `each`, oldest first within a source. A source's entries
    // arrived in order with the same timeout, so its expired ones are a
    // prefix of its queue.
    template <typename Each> void expire(Clock::time_point now, Each&& each) {
        std::deque<std::uint64_t> turns;
        for (const std::uint64_t source : turns_) {
            auto it = by_source_.find(source);
            auto& queue = it->second;
            while (!queue.empty() && queue.front().deadline <= now) {
                Entry entry = std::move(queue.front());
                queue.pop_front();
                --size_;
                reads_ -= entry.read ? 1 : 0;
                each(std::move(entry));
            }
            if (queue.empty())
                by_source_.erase(it);
            else
                turns.push_back(source);
        }
        turns_ = std::move(turns);
    }

    // Every entry, in no particular order (cbd is stopping).
    template <typename Each> void drain(Each&& each) {
        auto all = std::move(by_source_);
        by_source_.clear();
        turns_.clear();
        size_ = reads_ = 0;
        for (auto& [source, queue] : all)
            for (auto& entry : queue)
                each(std::move(entry));
    }

    // The first deadline of any waiting entry.
    std::optional<Clock::time_point> earliest_deadline() const {
        std::optional<Clock::time_point> first;
        for (const auto& [source, queue] : by_source_)
            if (!first || queue.front().deadline < *first)
                first = queue.front().deadline;
        return first;
    }

    std::size_t size() const { return size_; }
    std::size_t reads() const { return reads_; }
    std::size_t sources() const { return turns_.size(); }
    bool empty() const { return size_ == 0; }

  private:
    std::size_t capacity_;
    std::unordered_map<std::uint64_t, std::deque<Entry>> by_source_; // never an empty deque
    std::deque<std::uint64_t> turns_; // sources with entries waiting, next first
    std::size_t size_ = 0;
    std::size_t reads_ = 0;
};

} // namespace cbd
