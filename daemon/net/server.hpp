// The server: accepts connections on the listening socket and keeps the set
// of live sessions so that shutdown can stop them all. Sockets and lifetimes
// only; replies come from the dispatcher.
#pragma once

#include "daemon/dispatch/dispatcher.hpp"
#include "daemon/net/session.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>

namespace cbd {

class Server {
  public:
    Server(boost::asio::io_context& io, int listen_fd, const SessionShared& shared);

    void start();
    // Stops accepting and asks every session to finish its replies and close;
    // `on_drained` runs once they all have.
    void stop(std::function<void()> on_drained);

  private:
    void accept_next();
    // Answers too_many_connections, saying which limit, and closes.
    void refuse(boost::asio::local::stream_protocol::socket socket, Admission why,
                const PeerIdentity& who);
    // Keeps a refused socket open a moment, so its refusal is read.
    void linger(boost::asio::local::stream_protocol::socket socket);

    boost::asio::local::stream_protocol::acceptor acceptor_;
    boost::asio::steady_timer accept_backoff_;
    SessionShared shared_;
    std::chrono::steady_clock::time_point last_accept_warning_{};
    std::chrono::steady_clock::time_point last_refusal_warning_{};
    std::uint64_t connections_accepted_ = 0; // numbers each Peer (Peer::connection)
    bool stopping_ = false;
    // Refused sockets still open (linger()).
    std::shared_ptr<std::size_t> lingering_ = std::make_shared<std::size_t>(0);
};

} // namespace cbd
