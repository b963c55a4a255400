// Session (see session.hpp).
#include "daemon/net/session.hpp"

#include "daemon/core/log.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <utility>

namespace cbd {

namespace asio = boost::asio;

namespace {
// How long an overflowed watcher has to take its overflow line.
constexpr auto kOverflowGrace = std::chrono::seconds(5);

SessionMachineOptions machine_options(const SessionShared& shared) {
    return {.max_line_bytes = shared.max_line_bytes,
            .watch_queue = shared.watch_queue,
            .idle_timeout = shared.idle_timeout,
            .request_timeout = shared.request_timeout,
            .now = [] { return std::chrono::steady_clock::now(); }};
}
} // namespace

Session::Session(Socket socket, const SessionShared& shared, const PeerIdentity& who)
    : socket_(std::move(socket)), shared_(shared),
      machine_(
          [&dispatcher = shared.dispatcher](std::string_view line, RequestContext& ctx) {
              dispatcher.handle_line(line, ctx);
          },
          shared.stats, machine_options(shared), who.peer, who.level),
      overflow_deadline_(socket_.get_executor()), idle_timer_(socket_.get_executor()),
      request_timer_(socket_.get_executor()) {
    boost::system::error_code ignored;
    socket_.non_blocking(true, ignored); // write_now() tries a write, never waits on it
    shared_.sessions.add(this, machine_.peer().uid);
}

Session::~Session() {
    machine_.replies().on_front_ready = nullptr;
    if (subscribed_)
        shared_.events.remove(this);
    shared_.sessions.remove(this, machine_.peer().uid);
}

void Session::start() {
    // While the connection is open, an answer still to come keeps it alive
    // (it may have no read or write pending while it waits); close() lets go.
    machine_.replies().on_front_ready = [self = shared_from_this()] { self->post_pump(); };
    if (const auto at = machine_.idle_deadline())
        arm_idle_timer(*at);
    machine_.start();
    pump();
}

void Session::stop() {
    machine_.stop();
    pump();
}

void Session::take_turn() {
    machine_.turn_granted();
    pump();
}

void Session::post_pump() {
    if (pump_posted_ || machine_.closed())
        return;
    pump_posted_ = true;
    asio::post(socket_.get_executor(), [self = shared_from_this()] {
        self->pump_posted_ = false;
        self->machine_.wake();
        self->pump();
    });
}

void Session::push_event(const std::shared_ptr<const std::string>& line) {
    machine_.push_event(line);
    pump();
}

void Session::pump() {
    using Kind = SessionStep::Kind;
    for (;;) {
        const SessionStep step = machine_.next();
        switch (step.kind) {
        case Kind::Idle:
            return;
        case Kind::Write:
            write_now(step.bytes);
            break;
        case Kind::AwaitWrite:
            write_later(step.bytes);
            break;
        case Kind::Read:
            // async_read_some, not async_wait + read: Asio re-arms epoll for
            // every async_wait, while a read op waits on the edge-triggered
            // registration it already has (and skips the speculative read
            // after one that drained the socket), so a request costs one read
            // and one write.
            socket_.async_read_some(
                asio::buffer(step.space.data(), step.space.size()),
                [self = shared_from_this()](const boost::system::error_code& ec, std::size_t n) {
                    self->on_read(ec, n);
                });
            break;
        case Kind::CancelRead: {
            boost::system::error_code ignored;
            socket_.cancel(ignored);
            break;
        }
        case Kind::WaitTurn:
            shared_.sessions.wait_turn(shared_from_this());
            break;
        case Kind::Watch:
            shared_.events.add(this, machine_.take_watch_filter());
            subscribed_ = true;
            break;
        case Kind::Unwatch:
            unwatch_after_overflow();
            break;
        case Kind::ArmRequestTimer:
            arm_request_timer(step.deadline);
            break;
        case Kind::ShutdownSend: {
            boost::system::error_code ignored;
            socket_.shutdown(Socket::shutdown_send, ignored);
            break;
        }
        case Kind::Close:
            close();
            break;
        }
    }
}

void Session::write_now(std::string_view bytes) {
    // A batch of replies almost always fits the socket buffer: write it now,
    // and only when the buffer is full wait for the client to read.
    boost::system::error_code ec;
    const std::size_t n = socket_.write_some(asio::buffer(bytes), ec);
    if (ec && ec != asio::error::would_block && ec != asio::error::try_again) {
        machine_.write_failed();
        return;
    }
    machine_.wrote(ec ? 0 : n);
}

void Session::write_later(std::string_view bytes) {
    // The machine keeps `bytes` untouched until write_done().
    asio::async_write(
        socket_, asio::buffer(bytes),
        [self = shared_from_this()](const boost::system::error_code& ec, std::size_t) {
            if (ec)
                self->machine_.write_failed();
            else
                self->machine_.write_done();
            self->pump();
        });
}

void Session::on_read(const boost::system::error_code& ec, std::size_t n) {
    if (ec == asio::error::eof)
        machine_.read_ended();
    else if (ec)
        machine_.read_failed(ec == asio::error::operation_aborted);
    else
        machine_.read(n);
    pump();
}

void Session::unwatch_after_overflow() {
    shared_.events.remove(this);
    subscribed_ = false;
    log_warn("watcher pid " + std::to_string(machine_.peer().pid) + " fell " +
             std::to_string(shared_.watch_queue) + " events behind; dropping it");
    // A client that reads nothing would never take its overflow line: give
    // it a few seconds, then close regardless.
    overflow_deadline_.expires_after(kOverflowGrace);
    overflow_deadline_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
        if (ec)
            return;
        self->machine_.overflow_grace_ended();
        self->pump();
    });
}

void Session::close() {
    if (subscribed_) {
        shared_.events.remove(this);
        subscribed_ = false;
    }
    // Answers still to come fill a queue nobody reads; they no longer keep
    // this session alive.
    machine_.replies().on_front_ready = nullptr;
    overflow_deadline_.cancel();
    idle_timer_.cancel();
    request_timer_.cancel();
    boost::system::error_code ignored;
    socket_.close(ignored);
}

void Session::arm_idle_timer(SteadyTime at) {
    idle_timer_.expires_at(at);
    idle_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
        if (ec)
            return;
        const TimerVerdict verdict = self->machine_.idle_timer_fired();
        if (verdict.close) {
            log_debug("closing a connection idle for " +
                      std::to_string(self->shared_.idle_timeout.count()) + " ms (pid " +
                      std::to_string(self->machine_.peer().pid) + ")");
            self->pump();
        } else if (verdict.rearm_at) {
            self->arm_idle_timer(*verdict.rearm_at);
        }
    });
}

void Session::arm_request_timer(SteadyTime at) {
    request_timer_.expires_at(at);
    request_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
        if (ec)
            return;
        const TimerVerdict verdict = self->machine_.request_timer_fired();
        if (verdict.close) {
            const Peer& peer = self->machine_.peer();
            log_debug("closing a connection whose request line was not finished within " +
                      std::to_string(self->shared_.request_timeout.count()) + " ms (pid " +
                      std::to_string(peer.pid) + ", uid " + std::to_string(peer.uid) + ")");
            self->pump();
        } else if (verdict.rearm_at) {
            self->arm_request_timer(*verdict.rearm_at);
        }
    });
}

} // namespace cbd
