// Server (see server.hpp).
#include "daemon/server.hpp"

#include "common/reply.hpp"
#include "daemon/log.hpp"

#include <memory>

namespace cbd {

namespace asio = boost::asio;

Server::Server(asio::io_context& io, int listen_fd, const SessionShared& shared)
    : acceptor_(io), accept_backoff_(io), shared_(shared) {
    acceptor_.assign(asio::local::stream_protocol(), listen_fd);
}

void Server::start() { accept_next(); }

void Server::accept_next() {
    acceptor_.async_accept([this](const boost::system::error_code& ec,
                                  asio::local::stream_protocol::socket socket) {
        if (stopping_ || ec == asio::error::operation_aborted)
            return;
        if (ec) {
            // Out of descriptors or memory: wait a little instead of spinning
            // on an accept that keeps failing; clients queue in the backlog.
            // Say so once a minute at most: this can last, and the log is
            // not the place to spin either.
            const auto now = std::chrono::steady_clock::now();
            if (now - last_accept_warning_ >= std::chrono::minutes(1)) {
                last_accept_warning_ = now;
                log_warn("accept failed: " + ec.message() +
                         "; retrying every 100 ms (raise LimitNOFILE or lower --max-connections)");
            }
            accept_backoff_.expires_after(std::chrono::milliseconds(100));
            accept_backoff_.async_wait([this](const boost::system::error_code& wait_ec) {
                if (!wait_ec && !stopping_)
                    accept_next();
            });
            return;
        }
        const PeerIdentity who = identify_peer(socket.native_handle(), shared_.access);
        const Admission admission =
            admit(shared_.limits,
                  OpenConnections{shared_.sessions.size(), shared_.sessions.count_of(who.peer.uid)},
                  who.peer.uid, who.level);
        if (admission == Admission::Admit)
            std::make_shared<Session>(std::move(socket), shared_, who)->start();
        else
            refuse(std::move(socket), admission, who);
        accept_next();
    });
}

void Server::refuse(asio::local::stream_protocol::socket socket, Admission why,
                    const PeerIdentity& who) {
    shared_.stats.connections_refused += 1;
    shared_.stats.errors[static_cast<std::size_t>(ErrorCode::TooManyConnections)] += 1;
    const std::string message = refusal_message(shared_.limits, why, who.peer.uid);
    // Once a minute at most: a peer that keeps trying must not flood the log.
    const auto now = std::chrono::steady_clock::now();
    if (now - last_refusal_warning_ >= std::chrono::minutes(1)) {
        last_refusal_warning_ = now;
        log_warn("refusing a connection from uid " + std::to_string(who.peer.uid) + " (pid " +
                 std::to_string(who.peer.pid) + ", " +
                 std::string(access_level_name(who.level)) + " level): " + message + "; " +
                 std::to_string(shared_.stats.connections_refused) + " refused so far");
    }
    // One line, written without waiting: a fresh socket's buffer takes it.
    std::string line;
    append_error_reply(line, {}, ErrorCode::TooManyConnections, message);
    socket.non_blocking(true);
    boost::system::error_code ignored;
    socket.write_some(asio::buffer(line), ignored);
    socket.shutdown(asio::local::stream_protocol::socket::shutdown_both, ignored);
    socket.close(ignored);
}

void Server::stop(std::function<void()> on_drained) {
    if (stopping_)
        return;
    stopping_ = true;
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    accept_backoff_.cancel();
    shared_.sessions.stop_all(std::move(on_drained));
}

} // namespace cbd
