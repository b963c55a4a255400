// One client connection: its socket and its timers. What to do with them is
// decided by its SessionMachine (session_machine.hpp): when to read, what to
// write, when to wait for a turn, when to close. This class only carries the
// machine's steps out on the socket and feeds it what happened. A client
// that pipelines without reading fills the machine's bound, and then nothing
// more is dispatched or read until it reads: a connection costs at most the
// bound plus one reply, whatever it sends. After a `watch` request the
// connection turns into an event stream.
#pragma once

#include "daemon/core/peer.hpp"
#include "daemon/dispatch/dispatcher.hpp"
#include "daemon/dispatch/event_hub.hpp"
#include "daemon/dispatch/stats.hpp"
#include "daemon/net/connection_limits.hpp"
#include "daemon/net/peer_credentials.hpp"
#include "daemon/net/session_machine.hpp"
#include "daemon/net/session_set.hpp"

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <memory>
#include <string>

namespace cbd {

// The default of --request-timeout.
inline constexpr std::chrono::milliseconds kDefaultRequestTimeout{10'000};

// What every session shares.
struct SessionShared {
    Dispatcher& dispatcher;
    SessionSet& sessions;
    EventHub& events;
    DaemonStats& stats;
    const AccessConfig& access; // read when a connection opens
    std::size_t max_line_bytes;
    std::size_t watch_queue;                // most event lines a watcher may have unsent
    ConnectionLimits limits;                // the server refuses more
    std::chrono::milliseconds idle_timeout; // no request line this long: close; 0 = never
    // An unfinished request line must be finished within this (0 = never),
    // whatever trickle of bytes it arrives in: a slot is not held by
    // sending one byte a second.
    std::chrono::milliseconds request_timeout;
};

class Session final : public std::enable_shared_from_this<Session>, public Watcher {
  public:
    using Socket = boost::asio::local::stream_protocol::socket;

    Session(Socket socket, const SessionShared& shared, const PeerIdentity& who);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    void start();
    // Stop reading; replies already produced are still written, then close.
    void stop();

    void push_event(const std::shared_ptr<const std::string>& line) override;

  private:
    // Carries out the machine's steps until it waits for something. Every
    // event (a read, a write, an answer from the backend) ends here.
    void pump();
    // A Write step: what the socket takes now, without waiting.
    void write_now(std::string_view bytes);
    // An AwaitWrite step: the rest, once the client reads.
    void write_later(std::string_view bytes);
    void on_read(const boost::system::error_code& ec, std::size_t n);
    // pump() later, from the loop: for answers that arrive inside someone
    // else's call stack (a commit, a Redis reply).
    void post_pump();
    // SessionSet's turn queue gives this session its next turn.
    friend class SessionSet;
    void take_turn();
    void unwatch_after_overflow();
    void close();
    void arm_idle_timer(SteadyTime at);
    void arm_request_timer(SteadyTime at);

    Socket socket_;
    SessionShared shared_;
    SessionMachine machine_;
    bool subscribed_ = false; // to the event hub
    bool pump_posted_ = false;

    boost::asio::steady_timer overflow_deadline_;
    boost::asio::steady_timer idle_timer_;
    boost::asio::steady_timer request_timer_;
};

} // namespace cbd
