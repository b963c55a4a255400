// Connection (see connection.hpp).
#include "cli/connection.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace cbctl {

namespace {

// Replies are small; a line longer than this means we are not talking to cbd.
constexpr std::size_t kMaxReplyBytes = 16 * 1024 * 1024;

int remaining_ms(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

} // namespace

Connection Connection::open(const std::string& path, Clock::time_point deadline) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path)
        throw ConnectionError("socket path " + path + " is too long");
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        throw ConnectionError(std::string("cannot create a socket: ") + std::strerror(errno));
    Connection conn(fd, path);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        if (errno != EINPROGRESS && errno != EAGAIN)
            throw ConnectionError("cannot connect to cbd at " + path + ": " + std::strerror(errno));
        conn.wait_for(POLLOUT, deadline, "connecting");
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0)
            throw ConnectionError("cannot connect to cbd at " + path + ": " + std::strerror(err));
    }
    return conn;
}

Connection::Connection(Connection&& other) noexcept
    : fd_(other.fd_), path_(std::move(other.path_)), in_(std::move(other.in_)) {
    other.fd_ = -1;
}

Connection::~Connection() {
    if (fd_ >= 0)
        ::close(fd_);
}

void Connection::wait_for(short events, Clock::time_point deadline, std::string_view doing) {
    for (;;) {
        pollfd p{fd_, events, 0};
        int n = poll(&p, 1, remaining_ms(deadline));
        if (n > 0)
            return;
        if (n == 0)
            throw ConnectionError("timed out " + std::string(doing) + " cbd at " + path_);
        if (errno != EINTR)
            throw ConnectionError("poll failed: " + std::string(std::strerror(errno)));
    }
}

std::size_t Connection::write_some(std::string_view data) {
    ssize_t n = send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n >= 0)
        return static_cast<std::size_t>(n);
    if (errno == EAGAIN || errno == EINTR)
        return 0;
    const int write_errno = errno;
    if (write_errno == EPIPE || write_errno == ECONNRESET) {
        // cbd closed the connection. It may have said why first (a refused
        // connection gets one too_many_connections line, then the close):
        // keep that line for read_line(), so the user reads the reason, not
        // "broken pipe".
        for (int tries = 0; tries < 64 && in_.find('\n') == std::string::npos; ++tries) {
            try {
                if (!read_available())
                    break;
            } catch (const ConnectionError&) {
                break;
            }
        }
        if (in_.find('\n') != std::string::npos)
            return data.size(); // nothing more goes out; the reply says why
    }
    throw ConnectionError("lost the connection to cbd at " + path_ + ": " +
                          std::strerror(write_errno));
}

void Connection::send_all(std::string_view data, Clock::time_point deadline) {
    while (!data.empty()) {
        wait_for(POLLOUT, deadline, "writing to");
        data.remove_prefix(write_some(data));
    }
}

bool Connection::read_available() {
    char buf[64 * 1024];
    ssize_t n = recv(fd_, buf, sizeof buf, 0);
    if (n > 0) {
        in_.append(buf, static_cast<std::size_t>(n));
        if (in_.size() > kMaxReplyBytes && in_.find('\n') == std::string::npos)
            throw ConnectionError("reply from " + path_ + " is too long; is that cbd?");
        return true;
    }
    if (n == 0)
        return false;
    if (errno == EAGAIN || errno == EINTR)
        return true;
    throw ConnectionError("lost the connection to cbd at " + path_ + ": " + std::strerror(errno));
}

bool Connection::take_line(std::string& line) {
    auto newline = in_.find('\n');
    if (newline == std::string::npos)
        return false;
    line.assign(in_, 0, newline);
    in_.erase(0, newline + 1);
    return true;
}

std::string Connection::read_line(Clock::time_point deadline) {
    std::string line;
    while (!take_line(line)) {
        wait_for(POLLIN, deadline, "waiting for a reply from");
        if (!read_available())
            throw ConnectionError("cbd at " + path_ + " closed the connection before replying");
    }
    return line;
}

void Connection::shutdown_send() {
    ::shutdown(fd_, SHUT_WR);
}

} // namespace cbctl
