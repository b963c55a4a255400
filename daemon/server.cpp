// Server (see server.hpp).
#include "daemon/server.hpp"

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
            log_warn("accept failed: " + ec.message() + "; retrying in 100 ms");
            accept_backoff_.expires_after(std::chrono::milliseconds(100));
            accept_backoff_.async_wait([this](const boost::system::error_code& wait_ec) {
                if (!wait_ec && !stopping_)
                    accept_next();
            });
            return;
        }
        std::make_shared<Session>(std::move(socket), shared_)->start();
        accept_next();
    });
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
