// SessionMachine (see session_machine.hpp).
#include "daemon/net/session_machine.hpp"

#include "common/reply.hpp"
#include "daemon/dispatch/circuit_json.hpp"

#include <algorithm>
#include <utility>

namespace cbd {

namespace {

SessionStep step(SessionStep::Kind kind) {
    SessionStep s;
    s.kind = kind;
    return s;
}

SessionStep bytes_step(SessionStep::Kind kind, std::string_view bytes) {
    SessionStep s = step(kind);
    s.bytes = bytes;
    return s;
}

TimerVerdict close_verdict() {
    TimerVerdict v;
    v.close = true;
    return v;
}

TimerVerdict rearm_verdict(SteadyTime at) {
    TimerVerdict v;
    v.rearm_at = at;
    return v;
}

} // namespace

SessionMachine::SessionMachine(LineHandler handle_line, DaemonStats& stats,
                               SessionMachineOptions options, Peer peer, AccessLevel level)
    : handle_line_(std::move(handle_line)), stats_(stats), options_(std::move(options)),
      in_(options_.max_line_bytes), replies_(std::make_shared<ReplyQueue>()),
      last_request_(options_.now()) {
    ctx_.peer = peer;
    ctx_.level = level;
    ctx_.replies = replies_;
}

void SessionMachine::new_turn() {
    if (closed_)
        return;
    turn_open_ = true;
    budget_ = TurnBudget{};
}

bool SessionMachine::over_bound() const {
    return replies_->ready_bytes() + out_.size() >= kMaxUnsentReplyBytes ||
           replies_->waiting() >= kMaxWaitingReplies;
}

SessionStep SessionMachine::end_turn(SessionStep step) {
    turn_open_ = false;
    return step;
}

SessionStep SessionMachine::read_step(ReadFor purpose, std::span<char> space) {
    reading_ = true;
    read_for_ = purpose;
    SessionStep read = step(SessionStep::Kind::Read);
    read.space = space;
    return end_turn(read);
}

SessionStep SessionMachine::next() {
    using Kind = SessionStep::Kind;
    if (closed_)
        return {};
    if (close_now_) {
        closed_ = true;
        turn_open_ = false;
        return step(Kind::Close);
    }
    if (!turn_open_)
        return {};
    if (cancel_read_) {
        cancel_read_ = false;
        return step(Kind::CancelRead);
    }
    if (unwatch_) {
        unwatch_ = false;
        return step(Kind::Unwatch);
    }
    if (await_write_) {
        // The socket is full: the turn ends, write_done() starts the next.
        await_write_ = false;
        return end_turn(bytes_step(Kind::AwaitWrite, out_));
    }
    // Dispatch and write until neither moves: a write the socket takes at
    // once may bring the unsent replies back under the bound (dispatch more)
    // or empty the queue (events may go). At most one turn's budget of work:
    // then the connection waits for a turn, behind every other connection
    // that is ready.
    dispatch_lines();
    if (watch_filter_)
        return step(Kind::Watch);
    if (const auto deadline = request_deadline(); deadline && !request_timer_armed_) {
        request_timer_armed_ = true;
        SessionStep arm = step(Kind::ArmRequestTimer);
        arm.deadline = *deadline;
        return arm;
    }
    if (!writing_ && take_ready()) {
        writing_ = true;
        return bytes_step(Kind::Write, out_);
    }
    if (writing_)
        return end_turn({}); // write_done() comes back here
    if (replies_->empty() && events_.empty()) {
        // Everything owed is out.
        if (close_after_write_)
            return drain_then_close();
        if (stopping_ || (peer_done_ && !in_.has_line())) {
            close();
            return next();
        }
    }
    if (watching_) {
        if (reading_)
            return end_turn({});
        if (stopping_) {
            close();
            return next();
        }
        return read_step(ReadFor::Watch, discard_);
    }
    if (budget_.spent() && in_.has_line() && !stopping_ && !close_after_write_ && !over_bound()) {
        if (waiting_turn_)
            return end_turn({});
        waiting_turn_ = true;
        return end_turn(step(Kind::WaitTurn));
    }
    if (!reading_ && !stopping_ && !peer_done_ && !close_after_write_ && !over_bound() &&
        !in_.has_line()) {
        // write_space() may grow the buffer: only then is write_pos() final.
        const std::size_t space = in_.write_space();
        return read_step(ReadFor::Lines, {in_.write_pos(), space});
    }
    return end_turn({});
}

void SessionMachine::dispatch_lines() {
    if (watching_ || stopping_ || close_after_write_ || over_bound() || budget_.spent())
        return;
    const auto drained = in_.drain([&](std::string_view line) {
        const std::size_t ready_before = replies_->ready_bytes();
        handle_line_(line, ctx_);
        // The idle timeout counts requests, not bytes.
        last_request_ = options_.now();
        budget_.lines -= std::min(budget_.lines, std::max<std::size_t>(ctx_.operations, 1));
        const std::size_t made = replies_->ready_bytes() - ready_before;
        budget_.reply_bytes -= std::min(budget_.reply_bytes, made);
        // After `watch` the connection is an event stream; anything the
        // client sent after it is not a request.
        if (ctx_.start_watch)
            return false;
        return !over_bound() && !budget_.spent();
    });
    note_partial_line();
    if (ctx_.start_watch) {
        // The watch reply is in the queue behind every earlier reply; events
        // follow it (take_ready()).
        watching_ = true;
        watch_filter_ = std::move(*ctx_.start_watch);
        ctx_.start_watch.reset();
        return;
    }
    if (drained == LineBuffer::Drained::LineTooLong) {
        stats_.errors[static_cast<std::size_t>(ErrorCode::LineTooLong)] += 1;
        append_error_reply(replies_->ready_tail(), {}, ErrorCode::LineTooLong,
                           "request line longer than " + std::to_string(options_.max_line_bytes) +
                               " bytes; closing the connection");
        close_after_write_ = true;
    }
}

bool SessionMachine::take_ready() {
    if (replies_->front_ready()) {
        replies_->take_ready(out_);
        if (!out_.empty())
            return true;
    }
    // Events go out only behind every earlier reply.
    if (watching_ && replies_->empty())
        return take_events();
    return false;
}

bool SessionMachine::take_events() {
    if (overflowed_) {
        if (close_after_write_)
            return false; // the overflow line is written or being written
        out_ = overflow_event_line(dropped_);
        close_after_write_ = true;
        return true;
    }
    if (events_.empty())
        return false;
    for (const auto& e : events_)
        out_ += *e;
    events_.clear();
    return true;
}

SessionStep SessionMachine::drain_then_close() {
    if (!send_shut_) {
        send_shut_ = true;
        return step(SessionStep::Kind::ShutdownSend);
    }
    if (stopping_ || peer_done_ || drained_bytes_ > kMaxDrainBytes || reading_) {
        if (reading_)
            return end_turn({}); // the pending read comes back here
        close();
        return next();
    }
    return read_step(ReadFor::Drain, discard_);
}

void SessionMachine::read(std::size_t n) {
    reading_ = false;
    switch (read_for_) {
    case ReadFor::Lines:
        in_.commit(n);
        break;
    case ReadFor::Watch: // input on a watch connection is ignored
        break;
    case ReadFor::Drain:
        drained_bytes_ += n;
        break;
    }
    new_turn();
}

void SessionMachine::read_ended() {
    reading_ = false;
    if (read_for_ != ReadFor::Lines) {
        close(); // the client left
        return;
    }
    // The client is done sending (it may still read): answer the complete
    // lines it sent, then close. An unfinished line is dropped.
    peer_done_ = true;
    new_turn();
}

void SessionMachine::read_failed(bool cancelled) {
    reading_ = false;
    // A read cancelled by stop() lets stop() go on: the replies produced are
    // still written. A reset, or any end of a watcher's or a drain's read,
    // closes.
    if (read_for_ == ReadFor::Lines && cancelled && stopping_)
        new_turn();
    else
        close();
}

void SessionMachine::wrote(std::size_t n) {
    if (n >= out_.size()) {
        out_.clear();
        writing_ = false;
        return;
    }
    out_.erase(0, n);
    await_write_ = true;
}

void SessionMachine::write_done() {
    writing_ = false;
    out_.clear();
    new_turn();
}

void SessionMachine::write_failed() {
    writing_ = false;
    await_write_ = false;
    close();
}

void SessionMachine::turn_granted() {
    waiting_turn_ = false;
    new_turn();
}

void SessionMachine::stop() {
    stopping_ = true;
    // Cancelling a pending write would lose its replies: while one is
    // pending, write_done() comes back to next(), which closes once
    // everything owed is out (and closing ends the read).
    if (reading_ && !writing_)
        cancel_read_ = true;
    new_turn();
}

void SessionMachine::push_event(const std::shared_ptr<const std::string>& line) {
    if (overflowed_ || closed_ || close_now_)
        return;
    if (events_.size() >= options_.watch_queue) {
        dropped_ = events_.size() + 1;
        events_.clear();
        overflowed_ = true;
        unwatch_ = true;
        stats_.events_dropped += dropped_;
    } else {
        events_.push_back(line);
        stats_.events_emitted += 1;
    }
    new_turn(); // a watcher dispatches nothing: this only writes
}

std::optional<SteadyTime> SessionMachine::idle_deadline() const {
    if (options_.idle_timeout.count() <= 0 || closed_ || watching_)
        return std::nullopt;
    return last_request_ + options_.idle_timeout;
}

TimerVerdict SessionMachine::idle_timer_fired() {
    // One timer per connection, re-armed only when it fires: requests just
    // stamp last_request_, so the hot path never touches the timer.
    const auto deadline = idle_deadline();
    if (!deadline)
        return {};
    if (options_.now() >= *deadline) {
        close();
        return close_verdict();
    }
    return rearm_verdict(*deadline);
}

void SessionMachine::note_partial_line() {
    // Only a buffer that holds nothing but an unfinished line is the client's
    // doing: complete lines waiting behind the output bound are ours.
    const bool partial = in_.buffered() > 0 && !in_.has_line();
    if (!partial)
        partial_since_.reset();
    else if (!partial_since_)
        partial_since_ = options_.now();
}

std::optional<SteadyTime> SessionMachine::request_deadline() const {
    if (options_.request_timeout.count() <= 0 || !partial_since_ || closed_ || watching_ ||
        peer_done_)
        return std::nullopt;
    return *partial_since_ + options_.request_timeout;
}

TimerVerdict SessionMachine::request_timer_fired() {
    // Armed for the oldest unfinished line, re-armed when it fires early for
    // a line that began later.
    request_timer_armed_ = false;
    const auto deadline = request_deadline();
    if (!deadline)
        return {};
    if (options_.now() >= *deadline) {
        close();
        return close_verdict();
    }
    request_timer_armed_ = true;
    return rearm_verdict(*deadline);
}

} // namespace cbd
