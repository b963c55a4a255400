// One connection's control flow, without a socket or a timer: the session as
// a state machine, in the manner of nghttp2's session (fed bytes, asked what
// to send). Its inputs are what happened (bytes read, the peer's EOF, bytes
// written, an event, a stop, a turn granted, a timer that fired); next()
// answers what to do now (write these bytes, read into this space, wait for
// a turn, shut down sending, close). Session carries the answers out on its
// socket and timers; the fuzzer carries them out on a byte pipe, so both
// drive this very class.
//
// What it decides: it hands complete lines to the line handler (the
// Dispatcher) while its unsent replies stay under the bound (kMaxUnsent
// ReplyBytes, kMaxWaitingReplies) and within one turn's budget, writes the
// ready front of its ReplyQueue, and then events behind every earlier reply
// once the connection watches. After a fatal protocol error it sends its
// last reply, shuts down sending and drains what the peer still sends; after
// the peer's EOF it answers every complete line, then closes; after stop()
// it writes what is produced, then closes.
#pragma once

#include "daemon/dispatch/dispatcher.hpp"
#include "daemon/dispatch/event_hub.hpp"
#include "daemon/dispatch/reply_queue.hpp"
#include "daemon/dispatch/stats.hpp"
#include "daemon/net/line_buffer.hpp"

#include <array>
#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace cbd {

// Most bytes of replies a connection may have unsent (ready, or being
// written) before it stops dispatching its further requests; it goes on as
// the client reads. One reply may take it past the bound (a `list` page).
inline constexpr std::size_t kMaxUnsentReplyBytes = 1024 * 1024;
// Most replies a connection may have waiting for the backend at once.
inline constexpr std::size_t kMaxWaitingReplies = 1024;
// Fairness: what one connection may dispatch in one turn of the loop, in
// operations (a line is one, a reportBatch one per entry) and in bytes of
// replies made at once, before it lets every other ready connection have its
// turn. One line always goes through, so a `list` page (up to ~200 KB) or a
// batch of 1000 reports costs one turn; 20 connections flooding them keep a
// writer waiting for 20 pages at most, not 20 megabytes.
inline constexpr std::size_t kMaxLinesPerTurn = 64;
inline constexpr std::size_t kMaxReplyBytesPerTurn = 64 * 1024;
// How much a client may still send after a fatal error before we just close.
inline constexpr std::size_t kMaxDrainBytes = 1024 * 1024;

using SteadyTime = std::chrono::steady_clock::time_point;

struct SessionMachineOptions {
    std::size_t max_line_bytes;
    std::size_t watch_queue;                // most event lines a watcher may have unsent
    std::chrono::milliseconds idle_timeout; // no request line this long: close; 0 = never
    // An unfinished request line must be finished within this (0 = never).
    std::chrono::milliseconds request_timeout;
    // The time, for the timeouts: steady_clock's in the daemon, a test's own
    // in tests.
    std::function<SteadyTime()> now;
};

// What the machine asks its driver to do.
struct SessionStep {
    enum class Kind {
        Idle,            // nothing until the next input
        Write,           // write what the socket takes of `bytes` now, then wrote(n)
        AwaitWrite,      // write the rest (`bytes`) once the socket takes it, then write_done()
        Read,            // read into `space`, then read(n), read_ended() or read_failed()
        CancelRead,      // end the pending read (it comes back as read_failed(true))
        WaitTurn,        // queue for a turn of the loop, then turn_granted()
        Watch,           // subscribe to events with take_watch_filter()
        Unwatch,         // overflowed: unsubscribe, overflow_grace_ended() after a grace
        ArmRequestTimer, // request_timer_fired() at `deadline`
        ShutdownSend,    // send nothing more (what is written stays on its way)
        Close,           // close the connection; the machine is done
    };
    Kind kind = Kind::Idle;
    std::string_view bytes;
    std::span<char> space;
    SteadyTime deadline{};
};

// A timer's verdict when it fires: close the connection (the next step is
// Close), arm it again for `rearm_at`, or let it be.
struct TimerVerdict {
    bool close = false;
    std::optional<SteadyTime> rearm_at;
};

class SessionMachine {
  public:
    // Hands one request line (without its "\n") to the dispatcher: exactly
    // one reply into ctx.replies, or none for a blank line.
    using LineHandler = std::function<void(std::string_view line, RequestContext& ctx)>;

    SessionMachine(LineHandler handle_line, DaemonStats& stats, SessionMachineOptions options,
                   Peer peer, AccessLevel level);
    SessionMachine(const SessionMachine&) = delete;
    SessionMachine& operator=(const SessionMachine&) = delete;

    // What to do now. Call until Idle after every input; an input starts a
    // new turn (with a fresh budget), wrote(n) goes on with the same one.
    SessionStep next();

    // --- inputs ---
    void start() { new_turn(); }
    // A Read step's space holds `n` (> 0) new bytes.
    void read(std::size_t n);
    // The peer shut down its sending side (EOF on the read).
    void read_ended();
    // The read failed: a reset, or `cancelled` after CancelRead.
    void read_failed(bool cancelled);
    // The socket took `n` bytes of a Write step now.
    void wrote(std::size_t n);
    // An AwaitWrite step's bytes are all written.
    void write_done();
    void write_failed();
    // An answer from the backend made the front of the queue ready (the
    // driver runs this from its loop, not inside the backend's call stack).
    void wake() { new_turn(); }
    void turn_granted();
    // Stop reading; replies already produced are still written, then close.
    void stop();
    void push_event(const std::shared_ptr<const std::string>& line);
    TimerVerdict idle_timer_fired();
    TimerVerdict request_timer_fired();
    // An overflowed watcher did not take its overflow line in time.
    void overflow_grace_ended() { close(); }

    // --- what the driver needs to know ---
    // Where answers arrive; the driver sets its on_front_ready.
    ReplyQueue& replies() { return *replies_; }
    const Peer& peer() const { return ctx_.peer; }
    // The filter of the Watch step; the driver must take it.
    WatchFilter take_watch_filter() {
        WatchFilter filter = std::move(*watch_filter_);
        watch_filter_.reset();
        return filter;
    }
    // When the idle timer should fire: unset once the connection watches or
    // closes, or when there is no idle timeout.
    std::optional<SteadyTime> idle_deadline() const;
    bool closed() const { return closed_; }
    bool watching() const { return watching_; }
    // Event lines dropped when the watcher overflowed.
    std::uint64_t dropped_events() const { return dropped_; }

  private:
    // What this turn may still dispatch (see kMaxLinesPerTurn): `lines`
    // counts operations.
    struct TurnBudget {
        std::size_t lines = kMaxLinesPerTurn;
        std::size_t reply_bytes = kMaxReplyBytesPerTurn;
        bool spent() const { return lines == 0 || reply_bytes == 0; }
    };
    // What a pending read was for: its bytes are request lines, or ignored
    // (a watcher's input, or a drain after a fatal error).
    enum class ReadFor { Lines, Watch, Drain };

    void new_turn();
    void dispatch_lines();
    // Over the output bound: dispatch nothing more until the client reads.
    bool over_bound() const;
    // Takes what is ready to write (replies, or events behind them) into
    // out_; false when there is none.
    bool take_ready();
    bool take_events();
    // After a fatal error: stop sending, read and discard what the client
    // still sends until it closes, so our last reply is not lost to a reset
    // caused by unread input.
    SessionStep drain_then_close();
    SessionStep read_step(ReadFor purpose, std::span<char> space);
    SessionStep end_turn(SessionStep step);
    void close() { close_now_ = true; }
    // Tracks when the unfinished line now in the buffer began.
    void note_partial_line();
    std::optional<SteadyTime> request_deadline() const;

    LineHandler handle_line_;
    DaemonStats& stats_;
    SessionMachineOptions options_;
    RequestContext ctx_; // the peer, its level, and the reply queue

    LineBuffer in_;
    // Where input we ignore goes (after a fatal error, or on a watch).
    std::array<char, 4096> discard_;
    std::shared_ptr<ReplyQueue> replies_; // also in ctx_
    std::string out_;                     // the batch being written

    TurnBudget budget_;
    bool turn_open_ = false; // within a turn: next() may act
    bool reading_ = false;
    ReadFor read_for_ = ReadFor::Lines;
    bool cancel_read_ = false;
    bool writing_ = false;     // a Write step is out, or its rest is being written
    bool await_write_ = false; // the socket took part of a Write: the rest must wait
    bool waiting_turn_ = false;
    bool stopping_ = false;
    bool peer_done_ = false; // the client sent EOF: answer what it sent, then close
    bool close_after_write_ = false;
    bool send_shut_ = false;
    bool close_now_ = false;
    bool closed_ = false;
    std::size_t drained_bytes_ = 0;

    bool watching_ = false;
    std::optional<WatchFilter> watch_filter_; // for the Watch step
    bool overflowed_ = false;
    bool unwatch_ = false; // for the Unwatch step
    std::uint64_t dropped_ = 0;
    std::deque<std::shared_ptr<const std::string>> events_; // not yet written

    SteadyTime last_request_; // the last complete line
    // When the unfinished line now in the buffer began; unset while the
    // buffer holds no unfinished line.
    std::optional<SteadyTime> partial_since_;
    bool request_timer_armed_ = false;
};

} // namespace cbd
