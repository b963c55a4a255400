// Server (see server.hpp).
#include "daemon/net/server.hpp"

#include "common/reply.hpp"
#include "daemon/core/log.hpp"

#include <array>
#include <memory>

namespace cbd {

namespace asio = boost::asio;

Server::Server(asio::io_context& io, int listen_fd, const SessionShared& shared)
    : acceptor_(io), accept_backoff_(io), shared_(shared) {
    acceptor_.assign(asio::local::stream_protocol(), listen_fd);
}

void Server::start() {
    accept_next();
}

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
        PeerIdentity who = identify_peer(socket.native_handle(), shared_.access);
        who.peer.connection = ++connections_accepted_;
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
                 std::to_string(who.peer.pid) + ", " + std::string(access_level_name(who.level)) +
                 " level): " + message + "; " + std::to_string(shared_.stats.connections_refused) +
                 " refused so far");
    }
    // One line, written without waiting: a fresh socket's buffer takes it.
    std::string line;
    append_error_reply(line, {}, ErrorCode::TooManyConnections, message);
    socket.non_blocking(true);
    boost::system::error_code ignored;
    socket.write_some(asio::buffer(line), ignored);
    socket.shutdown(asio::local::stream_protocol::socket::shutdown_send, ignored);
    linger(std::move(socket));
}

namespace {
// A refused socket is kept this long, reading and dropping what the client
// sends, and at most this many at once (each holds a descriptor).
constexpr auto kRefusalLinger = std::chrono::milliseconds(500);
constexpr std::size_t kMaxLingeringRefusals = 64;
} // namespace

void Server::linger(asio::local::stream_protocol::socket socket) {
    // A client that writes its request before it reads would otherwise hit a
    // closed socket (EPIPE) and never read the line that says why. So the
    // socket stays open a moment, our side shut: the client's request lands,
    // it reads the refusal and then EOF.
    if (*lingering_ >= kMaxLingeringRefusals)
        return; // closed as it goes out of scope
    // The count is shared: a handler torn down with the loop may outlive
    // the server.
    struct Lingering {
        asio::local::stream_protocol::socket socket;
        asio::steady_timer deadline;
        std::array<char, 4096> discard{};
        std::shared_ptr<std::size_t> count;
        Lingering(asio::local::stream_protocol::socket s, std::shared_ptr<std::size_t> c)
            : socket(std::move(s)), deadline(socket.get_executor()), count(std::move(c)) {
            *count += 1;
        }
        ~Lingering() { *count -= 1; }
        static void read(const std::shared_ptr<Lingering>& self) {
            self->socket.async_read_some(asio::buffer(self->discard),
                                         [self](const boost::system::error_code& ec, std::size_t) {
                                             if (ec) {
                                                 self->deadline.cancel();
                                                 return;
                                             }
                                             read(self);
                                         });
        }
    };
    auto held = std::make_shared<Lingering>(std::move(socket), lingering_);
    held->deadline.expires_after(kRefusalLinger);
    held->deadline.async_wait([held](const boost::system::error_code& ec) {
        if (!ec) {
            boost::system::error_code ignored;
            held->socket.close(ignored);
        }
    });
    Lingering::read(held);
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
