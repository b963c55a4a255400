// One connection's replies, in request order: pure, no I/O, so the fuzzer
// drives the very queue the server uses.
//
// A reply is either ready when its request is dispatched (the memory store
// answers at once) or comes later (a Redis answer, a reply held until the
// group commit that makes its change durable). Each of those gets a slot of
// its own, taken with reserve() and filled with fill(); replies that are ready
// at once are appended to the ready slot at the back. Only the ready front is
// ever handed to the writer, so replies leave in request order on every
// backend, whatever order the backend answers in. This is Redis's reply list
// with deferred nodes (networking.c), not byte offsets into one string: a
// flush never moves a reply that is still to come.
//
// The queue also counts what it holds, so the session can stop dispatching
// once the unsent replies pass its bound (see Session).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>

namespace cbd {

class ReplyQueue {
  public:
    // Names one reserved slot for fill(); tickets grow by one per slot.
    using Ticket = std::uint64_t;

    // Where a reply that is ready now goes: append exactly one reply line.
    std::string& ready_tail();
    // A slot for a reply that comes later, at the current end of the queue.
    // It counts `weight` towards waiting() until filled: a reportBatch's one
    // reply stands for one backend operation per entry.
    Ticket reserve(std::size_t weight = 1);
    // Completes a reserved slot. Runs on_front_ready when this makes the
    // front of the queue writable. A second fill of a slot is ignored.
    void fill(Ticket ticket, std::string text);

    // Moves every ready reply at the front into `out` (appended), stopping at
    // the first slot still to come.
    void take_ready(std::string& out);

    bool front_ready() const { return !slots_.empty() && slots_.front().ready; }
    bool empty() const { return slots_.empty(); }
    // Bytes of ready replies not yet taken.
    std::size_t ready_bytes() const {
        return sealed_bytes_ +
               (!slots_.empty() && slots_.back().open ? slots_.back().text.size() : 0);
    }
    // Slots still to come, each counted by its weight.
    std::size_t waiting() const { return waiting_; }

    // Told when fill() makes the front writable (not when ready_tail() adds
    // to an already writable front: the dispatching side knows that).
    std::function<void()> on_front_ready;

  private:
    struct Slot {
        std::string text;
        bool ready = false;
        bool open = false;      // the ready back slot that ready_tail() appends to
        std::size_t weight = 0; // what it counts in waiting_ until filled
    };
    // Closes the open back slot to appends (its bytes now count as sealed).
    void seal_back();
    Slot& slot_of(Ticket ticket);

    std::deque<Slot> slots_;
    Ticket front_ticket_ = 0;      // the ticket of slots_.front()
    std::size_t sealed_bytes_ = 0; // ready bytes outside the open back slot
    std::size_t waiting_ = 0;
    std::string spare_; // a drained slot's buffer, for reuse
};

} // namespace cbd
