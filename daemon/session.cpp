// Session (see session.hpp).
#include "daemon/session.hpp"

#include "common/reply.hpp"
#include "daemon/log.hpp"

#include <algorithm>
#include <boost/asio/write.hpp>
#include <cstring>
#include <utility>

namespace cbd {

namespace asio = boost::asio;

namespace {
constexpr std::size_t kInitialInputBytes = 16 * 1024;
// How much a client may still send after a fatal error before we just close.
constexpr std::size_t kMaxDrainBytes = 1024 * 1024;
} // namespace

void SessionSet::remove(Session* s) {
    sessions_.erase(s);
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

Session::Session(Socket socket, Dispatcher& dispatcher, SessionSet& sessions,
                 std::size_t max_line_bytes)
    : socket_(std::move(socket)), dispatcher_(dispatcher), sessions_(sessions),
      max_line_bytes_(max_line_bytes),
      in_(std::min(kInitialInputBytes, max_line_bytes + 1)) {
    peer_ = peer_of(socket_.native_handle());
    sessions_.add(this);
}

Session::~Session() { sessions_.remove(this); }

void Session::start() { read_more(); }

void Session::stop() {
    stopping_ = true;
    if (reading_) {
        boost::system::error_code ignored;
        socket_.cancel(ignored);
    }
}

void Session::read_more() {
    if (stopping_) {
        close();
        return;
    }
    if (in_used_ == in_.size())
        in_.resize(std::min(in_.size() * 2, max_line_bytes_ + 1));
    reading_ = true;
    socket_.async_read_some(
        asio::buffer(in_.data() + in_used_, in_.size() - in_used_),
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
    in_used_ += n;
    handle_complete_lines();
    if (!out_.empty())
        write_replies();
    else
        read_more();
}

void Session::handle_complete_lines() {
    std::size_t start = 0;
    while (start < in_used_) {
        const char* begin = in_.data() + start;
        const auto* newline = static_cast<const char*>(std::memchr(begin, '\n', in_used_ - start));
        if (newline == nullptr)
            break;
        dispatcher_.handle_line(std::string_view(begin, static_cast<std::size_t>(newline - begin)),
                                peer_, out_);
        start = static_cast<std::size_t>(newline - in_.data()) + 1;
    }
    if (start > 0) {
        std::memmove(in_.data(), in_.data() + start, in_used_ - start);
        in_used_ -= start;
    }
    // The buffer holds max_line_bytes_ + 1 bytes at most, so a partial line
    // longer than the limit can never become a valid line.
    if (in_used_ > max_line_bytes_) {
        append_error_reply(out_, {}, ErrorCode::LineTooLong,
                           "request line longer than " + std::to_string(max_line_bytes_) +
                               " bytes; closing the connection");
        in_used_ = 0;
        close_after_write_ = true;
    }
}

void Session::write_replies() {
    asio::async_write(socket_, asio::buffer(out_),
                      [self = shared_from_this()](const boost::system::error_code& ec,
                                                  std::size_t) { self->on_written(ec); });
}

void Session::on_written(const boost::system::error_code& ec) {
    out_.clear();
    if (ec) {
        close();
        return;
    }
    if (close_after_write_) {
        drain_then_close();
        return;
    }
    read_more();
}

void Session::drain_then_close() {
    boost::system::error_code ignored;
    socket_.shutdown(Socket::shutdown_send, ignored);
    if (stopping_ || drained_bytes_ > kMaxDrainBytes) {
        close();
        return;
    }
    reading_ = true;
    socket_.async_read_some(
        asio::buffer(in_.data(), in_.size()),
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
    boost::system::error_code ignored;
    socket_.close(ignored);
}

} // namespace cbd
