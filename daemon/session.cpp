// Session (see session.hpp).
#include "daemon/session.hpp"

#include "common/reply.hpp"
#include "daemon/circuit_json.hpp"
#include "daemon/log.hpp"

#include <algorithm>
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

void SessionSet::add(Session* s) {
    sessions_.insert(s);
    stats_.connections_current = sessions_.size();
    stats_.connections_total += 1;
}

void SessionSet::remove(Session* s) {
    sessions_.erase(s);
    stats_.connections_current = sessions_.size();
    if (sessions_.empty() && on_empty_)
        std::exchange(on_empty_, nullptr)();
}

void SessionSet::stop_all(std::function<void()> on_empty) {
    if (sessions_.empty()) {
        on_empty();
        return;
    }
    on_empty_ = std::move(on_empty);
    // stop() may end a session and so edit the set: iterate a copy.
    std::vector<Session*> live(sessions_.begin(), sessions_.end());
    for (Session* s : live)
        s->stop();
}

Session::Session(Socket socket, const SessionShared& shared)
    : socket_(std::move(socket)), shared_(shared),
      in_(shared.max_line_bytes),
      overflow_deadline_(socket_.get_executor()), idle_timer_(socket_.get_executor()),
      last_request_(std::chrono::steady_clock::now()) {
    peer_ = peer_of(socket_.native_handle());
    boost::system::error_code ignored;
    socket_.non_blocking(true, ignored); // write_out() tries a write, never waits on it
    level_ = access_level_for(peer_, peer_groups(socket_.native_handle(), peer_), shared_.access,
                              geteuid());
    shared_.sessions.add(this);
}

Session::~Session() {
    if (watching_)
        shared_.events.remove(this);
    shared_.sessions.remove(this);
}

void Session::start() {
    if (shared_.idle_timeout.count() > 0)
        arm_idle_timer();
    read_more();
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
                      std::to_string(self->peer_.pid) + ")");
            self->close();
            return;
        }
        self->arm_idle_timer();
    });
}

void Session::stop() {
    stopping_ = true;
    if (reading_) {
        boost::system::error_code ignored;
        socket_.cancel(ignored);
    }
}

// --- request/reply mode -----------------------------------------------------

void Session::read_more() {
    if (stopping_) {
        close();
        return;
    }
    reading_ = true;
    // async_read_some, not async_wait + read: Asio re-arms epoll for every
    // async_wait, while a read op waits on the edge-triggered registration it
    // already has (and skips the speculative read after one that drained the
    // socket), so a request costs one read and one write.
    const std::size_t space = in_.write_space();
    socket_.async_read_some(
        asio::buffer(in_.write_pos(), space),
        [self = shared_from_this()](const boost::system::error_code& ec, std::size_t n) {
            self->on_read(ec, n);
        });
}

void Session::on_read(const boost::system::error_code& ec, std::size_t n) {
    reading_ = false;
    if (ec) {
        // EOF, reset, or cancelled by stop(): an unfinished line is dropped.
        close();
        return;
    }
    in_.commit(n);
    last_request_ = std::chrono::steady_clock::now();
    in_batch_ = true;
    handle_complete_lines();
    in_batch_ = false;
    finish_batch();
}

void Session::finish_batch() {
    if (deferred_open_ > 0) {
        awaiting_deferred_ = true; // the last completion comes back here
        return;
    }
    splice_deferred();
    if (out_.empty())
        read_more();
    else if (!held_.empty())
        await_commit();
    else
        write_out();
}

std::shared_ptr<DeferredReply> Session::take_slot() {
    auto slot = std::make_shared<DeferredReply>();
    deferred_.emplace_back(out_.size(), slot);
    deferred_open_ += 1;
    slot->on_complete = [self = shared_from_this()] {
        self->deferred_open_ -= 1;
        if (self->deferred_open_ == 0 && self->awaiting_deferred_ && !self->in_batch_) {
            self->awaiting_deferred_ = false;
            if (self->closed_) {
                self->deferred_.clear();
                return;
            }
            self->finish_batch();
        }
    };
    return slot;
}

void Session::splice_deferred() {
    if (deferred_.empty())
        return;
    std::string joined;
    std::size_t copied = 0;
    for (const auto& [pos, slot] : deferred_) {
        joined.append(out_, copied, pos - copied);
        joined += slot->text;
        copied = pos;
    }
    joined.append(out_, copied);
    out_ = std::move(joined);
    deferred_.clear();
}

void Session::await_commit() {
    shared_.commit_gate->when_durable(
        [self = shared_from_this()](const KeySet* undone) { self->on_durable(undone); });
}

void Session::on_durable(const KeySet* undone) {
    if (undone) {
        std::string rebuilt;
        std::size_t copied = 0;
        for (const auto& h : held_) {
            if (undone->find(h.key) == undone->end())
                continue;
            rebuilt.append(out_, copied, h.begin - copied);
            shared_.stats.errors[static_cast<std::size_t>(ErrorCode::StorageUnavailable)] += 1;
            append_error_reply(rebuilt, h.id_json, ErrorCode::StorageUnavailable,
                               "the state file could not be written, so this change was not "
                               "applied (see the daemon's log and stats)");
            copied = h.end;
        }
        rebuilt.append(out_, copied);
        out_ = std::move(rebuilt);
    }
    held_.clear();
    if (closed_)
        return;
    write_out();
}

void Session::handle_complete_lines() {
    RequestContext ctx{peer_, level_, std::nullopt, nullptr, this};
    CommitGate* gate = shared_.commit_gate;
    const auto drained = in_.drain([&](std::string_view line) {
        const std::size_t begin = out_.size();
        shared_.dispatcher.handle_line(line, ctx, out_);
        // A reply given while a change is uncommitted may report it (or one
        // it saw): it waits for the commit, and is rewritten if that fails.
        if (gate && gate->pending())
            held_.push_back(HeldReply{begin, out_.size(),
                                      ctx.request ? ctx.request->key : std::string(),
                                      ctx.request ? ctx.request->id_json : std::string()});
        // After `watch` the connection is an event stream; anything the
        // client sent after it is not a request.
        return !ctx.start_watch;
    });
    if (ctx.start_watch) {
        start_watching(std::move(*ctx.start_watch));
        return;
    }
    if (drained == LineBuffer::Drained::LineTooLong) {
        shared_.stats.errors[static_cast<std::size_t>(ErrorCode::LineTooLong)] += 1;
        append_error_reply(out_, {}, ErrorCode::LineTooLong,
                           "request line longer than " + std::to_string(shared_.max_line_bytes) +
                               " bytes; closing the connection");
        close_after_write_ = true;
    }
}

void Session::write_out() {
    // A batch of replies almost always fits the socket buffer: write it now,
    // and only when the buffer is full wait for the client to read.
    boost::system::error_code ec;
    const std::size_t n = socket_.write_some(asio::buffer(out_), ec);
    if (!ec && n == out_.size()) {
        on_written(ec);
        return;
    }
    if (ec && ec != asio::error::would_block && ec != asio::error::try_again) {
        on_written(ec);
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
    if (close_after_write_) {
        drain_then_close();
        return;
    }
    if (watching_) {
        if (!reading_)
            watch_read();
        flush_events();
        return;
    }
    read_more();
}

void Session::drain_then_close() {
    boost::system::error_code ignored;
    socket_.shutdown(Socket::shutdown_send, ignored);
    if (stopping_ || drained_bytes_ > kMaxDrainBytes || reading_) {
        if (!reading_)
            close();
        return; // a watcher's pending read sees the close
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
    overflow_deadline_.cancel();
    idle_timer_.cancel();
    boost::system::error_code ignored;
    socket_.close(ignored);
}

// --- watch mode -------------------------------------------------------------

void Session::start_watching(WatchFilter filter) {
    watching_ = true;
    shared_.events.add(this, std::move(filter));
    // The watch reply is in out_; on_written() starts the event flow.
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
        return;
    }
    events_.push_back(line);
    shared_.stats.events_emitted += 1;
    if (!writing_)
        flush_events();
}

void Session::flush_events() {
    if (writing_ || closed_)
        return;
    if (overflowed_) {
        out_ = overflow_event_line(dropped_);
        close_after_write_ = true;
        write_out();
        return;
    }
    if (events_.empty())
        return;
    for (const auto& e : events_)
        out_ += *e;
    events_.clear();
    write_out();
}

void Session::overflow() {
    overflowed_ = true;
    shared_.stats.events_dropped += dropped_;
    shared_.events.remove(this);
    log_warn("watcher pid " + std::to_string(peer_.pid) + " fell " +
             std::to_string(shared_.watch_queue) + " events behind; dropping it");
    // A client that reads nothing would never take its overflow line: give
    // it a few seconds, then close regardless.
    overflow_deadline_.expires_after(kOverflowGrace);
    overflow_deadline_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
        if (!ec)
            self->close();
    });
    flush_events();
}

} // namespace cbd
