// Session (see session.hpp).
#include "daemon/net/session.hpp"

#include "common/reply.hpp"
#include "daemon/core/log.hpp"
#include "daemon/dispatch/circuit_json.hpp"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <cstring>
#include <unistd.h>
#include <utility>

namespace cbd {

namespace asio = boost::asio;

namespace {
// How much a client may still send after a fatal error before we just close.
constexpr std::size_t kMaxDrainBytes = 1024 * 1024;
// How long an overflowed watcher has to take its overflow line.
constexpr auto kOverflowGrace = std::chrono::seconds(5);
} // namespace

Session::Session(Socket socket, const SessionShared& shared, const PeerIdentity& who)
    : socket_(std::move(socket)), shared_(shared), in_(shared.max_line_bytes),
      replies_(std::make_shared<ReplyQueue>()), overflow_deadline_(socket_.get_executor()),
      idle_timer_(socket_.get_executor()), last_request_(std::chrono::steady_clock::now()),
      request_timer_(socket_.get_executor()) {
    ctx_.peer = who.peer;
    ctx_.level = who.level;
    boost::system::error_code ignored;
    socket_.non_blocking(true, ignored); // write_out() tries a write, never waits on it
    ctx_.replies = replies_;
    shared_.sessions.add(this, ctx_.peer.uid);
}

Session::~Session() {
    replies_->on_front_ready = nullptr;
    if (watching_)
        shared_.events.remove(this);
    shared_.sessions.remove(this, ctx_.peer.uid);
}

void Session::start() {
    // While the connection is open, an answer still to come keeps it alive
    // (it may have no read or write pending while it waits); close() lets go.
    replies_->on_front_ready = [self = shared_from_this()] { self->post_pump(); };
    if (shared_.idle_timeout.count() > 0)
        arm_idle_timer();
    pump();
}

void Session::arm_idle_timer() {
    // One timer per connection, re-armed only when it fires: requests just
    // stamp last_request_, so the hot path never touches the timer.
    idle_timer_.expires_at(last_request_ + shared_.idle_timeout);
    idle_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
        if (ec || self->closed_ || self->watching_)
            return;
        if (std::chrono::steady_clock::now() - self->last_request_ >= self->shared_.idle_timeout) {
            log_debug("closing a connection idle for " +
                      std::to_string(self->shared_.idle_timeout.count()) + " ms (pid " +
                      std::to_string(self->ctx_.peer.pid) + ")");
            self->close();
            return;
        }
        self->arm_idle_timer();
    });
}

void Session::note_partial_line() {
    // Only a buffer that holds nothing but an unfinished line is the client's
    // doing: complete lines waiting behind the output bound are ours.
    const bool partial = in_.buffered() > 0 && !in_.has_line();
    if (!partial) {
        partial_since_.reset();
        return;
    }
    if (partial_since_)
        return;
    partial_since_ = std::chrono::steady_clock::now();
    if (shared_.request_timeout.count() > 0 && !request_timer_armed_)
        arm_request_timer();
}

void Session::arm_request_timer() {
    // As the idle timer: armed for the oldest unfinished line, re-armed when
    // it fires early for a line that began later.
    request_timer_armed_ = true;
    request_timer_.expires_at(*partial_since_ + shared_.request_timeout);
    request_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
        self->request_timer_armed_ = false;
        if (ec || self->closed_ || self->watching_ || self->peer_done_ || !self->partial_since_)
            return;
        if (std::chrono::steady_clock::now() - *self->partial_since_ >=
            self->shared_.request_timeout) {
            log_debug("closing a connection whose request line was not finished within " +
                      std::to_string(self->shared_.request_timeout.count()) + " ms (pid " +
                      std::to_string(self->ctx_.peer.pid) + ", uid " +
                      std::to_string(self->ctx_.peer.uid) + ")");
            self->close();
            return;
        }
        self->arm_request_timer();
    });
}

void Session::stop() {
    stopping_ = true;
    // cancel() would also cancel a pending write and lose its replies: while
    // one is pending, on_written() comes back to pump(), which closes once
    // everything owed is out (and close() ends the read).
    if (reading_ && !writing_) {
        boost::system::error_code ignored;
        socket_.cancel(ignored);
    }
    pump();
}

void Session::take_turn() {
    waiting_turn_ = false;
    pump();
}

void Session::post_pump() {
    if (pump_posted_ || closed_)
        return;
    pump_posted_ = true;
    asio::post(socket_.get_executor(), [self = shared_from_this()] {
        self->pump_posted_ = false;
        self->pump();
    });
}

// --- request/reply mode -----------------------------------------------------

bool Session::over_bound() const {
    return replies_->ready_bytes() + out_.size() >= kMaxUnsentReplyBytes ||
           replies_->waiting() >= kMaxWaitingReplies;
}

void Session::pump() {
    // Dispatch and write until neither moves: a write that completes at once
    // may bring the unsent replies back under the bound (dispatch more) or
    // empty the queue (events may go). At most one turn's budget of work:
    // then the connection goes to the back of the loop's queue, behind every
    // other connection that is ready.
    TurnBudget budget;
    for (;;) {
        if (closed_)
            return;
        dispatch_lines(budget);
        const bool wrote = write_ready();
        if (closed_ || writing_)
            return; // on_written() comes back here
        if (!wrote)
            break;
    }
    if (replies_->empty() && events_.empty()) {
        // Everything owed is out.
        if (close_after_write_) {
            drain_then_close();
            return;
        }
        if (stopping_ || (peer_done_ && !in_.has_line())) {
            close();
            return;
        }
    }
    if (watching_) {
        if (!reading_)
            watch_read();
        return;
    }
    if (budget.spent() && in_.has_line() && !stopping_ && !close_after_write_ && !over_bound()) {
        if (!waiting_turn_) {
            waiting_turn_ = true;
            shared_.sessions.wait_turn(shared_from_this());
        }
        return;
    }
    if (!reading_ && !stopping_ && !peer_done_ && !close_after_write_ && !over_bound() &&
        !in_.has_line())
        read_more();
}

void Session::dispatch_lines(TurnBudget& budget) {
    if (watching_ || stopping_ || close_after_write_ || over_bound() || budget.spent())
        return;
    const auto drained = in_.drain([&](std::string_view line) {
        const std::size_t ready_before = replies_->ready_bytes();
        shared_.dispatcher.handle_line(line, ctx_);
        // The idle timeout counts requests, not bytes.
        last_request_ = std::chrono::steady_clock::now();
        budget.lines -= std::min(budget.lines, std::max<std::size_t>(ctx_.operations, 1));
        const std::size_t made = replies_->ready_bytes() - ready_before;
        budget.reply_bytes -= std::min(budget.reply_bytes, made);
        // After `watch` the connection is an event stream; anything the
        // client sent after it is not a request.
        if (ctx_.start_watch)
            return false;
        return !over_bound() && !budget.spent();
    });
    note_partial_line();
    if (ctx_.start_watch) {
        start_watching(std::move(*ctx_.start_watch));
        ctx_.start_watch.reset();
        return;
    }
    if (drained == LineBuffer::Drained::LineTooLong) {
        shared_.stats.errors[static_cast<std::size_t>(ErrorCode::LineTooLong)] += 1;
        append_error_reply(replies_->ready_tail(), {}, ErrorCode::LineTooLong,
                           "request line longer than " + std::to_string(shared_.max_line_bytes) +
                               " bytes; closing the connection");
        close_after_write_ = true;
    }
}

void Session::read_more() {
    reading_ = true;
    // async_read_some, not async_wait + read: Asio re-arms epoll for every
    // async_wait, while a read op waits on the edge-triggered registration it
    // already has (and skips the speculative read after one that drained the
    // socket), so a request costs one read and one write.
    const std::size_t space = in_.write_space();
    socket_.async_read_some(asio::buffer(in_.write_pos(), space),
                            [self = shared_from_this()](const boost::system::error_code& ec,
                                                        std::size_t n) { self->on_read(ec, n); });
}

void Session::on_read(const boost::system::error_code& ec, std::size_t n) {
    reading_ = false;
    if (ec == asio::error::eof) {
        // The client is done sending (it may still read): answer the
        // complete lines it sent, then close. An unfinished line is dropped.
        peer_done_ = true;
        pump();
        return;
    }
    if (ec) {
        // A reset, or cancelled by stop(): stop() goes on in pump().
        if (ec == asio::error::operation_aborted && stopping_)
            pump();
        else
            close();
        return;
    }
    in_.commit(n);
    pump();
}

bool Session::write_ready() {
    if (writing_ || closed_)
        return false;
    if (replies_->front_ready()) {
        replies_->take_ready(out_);
        if (!out_.empty()) {
            write_out();
            return true;
        }
    }
    // Events go out only behind every earlier reply.
    if (watching_ && replies_->empty())
        return flush_events();
    return false;
}

void Session::write_out() {
    // A batch of replies almost always fits the socket buffer: write it now,
    // and only when the buffer is full wait for the client to read.
    boost::system::error_code ec;
    const std::size_t n = socket_.write_some(asio::buffer(out_), ec);
    if (!ec && n == out_.size()) {
        out_.clear(); // the caller, in pump(), goes on
        return;
    }
    if (ec && ec != asio::error::would_block && ec != asio::error::try_again) {
        close();
        return;
    }
    out_.erase(0, ec ? 0 : n);
    writing_ = true;
    asio::async_write(socket_, asio::buffer(out_),
                      [self = shared_from_this()](const boost::system::error_code& write_ec,
                                                  std::size_t) { self->on_written(write_ec); });
}

void Session::on_written(const boost::system::error_code& ec) {
    writing_ = false;
    out_.clear();
    if (ec) {
        close();
        return;
    }
    pump();
}

void Session::drain_then_close() {
    boost::system::error_code ignored;
    socket_.shutdown(Socket::shutdown_send, ignored);
    if (stopping_ || peer_done_ || drained_bytes_ > kMaxDrainBytes || reading_) {
        if (!reading_)
            close();
        return; // a pending read sees the close
    }
    reading_ = true;
    socket_.async_read_some(
        asio::buffer(discard_),
        [self = shared_from_this()](const boost::system::error_code& ec, std::size_t n) {
            self->reading_ = false;
            if (ec) {
                self->close();
                return;
            }
            self->drained_bytes_ += n;
            self->drain_then_close();
        });
}

void Session::close() {
    if (closed_)
        return;
    closed_ = true;
    if (watching_) {
        shared_.events.remove(this);
        watching_ = false;
    }
    // Answers still to come fill a queue nobody reads; they no longer keep
    // this session alive.
    replies_->on_front_ready = nullptr;
    overflow_deadline_.cancel();
    idle_timer_.cancel();
    request_timer_.cancel();
    boost::system::error_code ignored;
    socket_.close(ignored);
}

// --- watch mode -------------------------------------------------------------

void Session::start_watching(WatchFilter filter) {
    watching_ = true;
    shared_.events.add(this, std::move(filter));
    // The watch reply is in the queue behind every earlier reply; events
    // follow it (write_ready()).
}

void Session::watch_read() {
    if (stopping_ || closed_) {
        close();
        return;
    }
    reading_ = true;
    socket_.async_read_some(
        asio::buffer(discard_),
        [self = shared_from_this()](const boost::system::error_code& ec, std::size_t) {
            self->reading_ = false;
            if (ec) {
                self->close(); // the client left (or we are stopping)
                return;
            }
            self->watch_read(); // input on a watch connection is ignored
        });
}

void Session::push_event(const std::shared_ptr<const std::string>& line) {
    if (overflowed_ || closed_)
        return;
    if (events_.size() >= shared_.watch_queue) {
        dropped_ = events_.size() + 1;
        events_.clear();
        overflow();
    } else {
        events_.push_back(line);
        shared_.stats.events_emitted += 1;
    }
    if (!writing_)
        pump(); // a watcher dispatches nothing: this only writes
}

bool Session::flush_events() {
    // Only behind every earlier reply: the queue must be empty.
    if (writing_ || closed_ || !replies_->empty())
        return false;
    if (overflowed_) {
        if (close_after_write_)
            return false; // the overflow line is written or being written
        out_ = overflow_event_line(dropped_);
        close_after_write_ = true;
        write_out();
        return true;
    }
    if (events_.empty())
        return false;
    for (const auto& e : events_)
        out_ += *e;
    events_.clear();
    write_out();
    return true;
}

void Session::overflow() {
    overflowed_ = true;
    shared_.stats.events_dropped += dropped_;
    shared_.events.remove(this);
    log_warn("watcher pid " + std::to_string(ctx_.peer.pid) + " fell " +
             std::to_string(shared_.watch_queue) + " events behind; dropping it");
    // A client that reads nothing would never take its overflow line: give
    // it a few seconds, then close regardless.
    overflow_deadline_.expires_after(kOverflowGrace);
    overflow_deadline_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
        if (!ec)
            self->close();
    });
}

} // namespace cbd
