// One client connection: owns its input buffer (bounded by the line limit),
// its ReplyQueue (replies in request order, some still to come from the
// backend), and the batch being written. It reads, hands complete lines to
// the dispatcher while its unsent replies stay under a bound, and writes the
// ready front of the queue. A client that pipelines without reading fills
// the bound, and then nothing more is dispatched or read until it reads: a
// connection costs at most the bound plus one reply, whatever it sends.
// After a `watch` request the connection turns into an event stream: event
// lines queue (up to a bound) behind every earlier reply, and input is only
// read to notice the client leaving. I/O only: the dispatcher decides every
// reply.
#pragma once

#include "daemon/core/peer.hpp"
#include "daemon/dispatch/dispatcher.hpp"
#include "daemon/dispatch/event_hub.hpp"
#include "daemon/dispatch/reply_queue.hpp"
#include "daemon/dispatch/stats.hpp"
#include "daemon/net/connection_limits.hpp"
#include "daemon/net/line_buffer.hpp"
#include "daemon/net/peer_credentials.hpp"
#include "daemon/net/session_set.hpp"

#include <array>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace cbd {

// Most bytes of replies a connection may have unsent (ready, or being
// written) before it stops dispatching its further requests; it goes on as
// the client reads. One reply may take it past the bound (a `list` page).
inline constexpr std::size_t kMaxUnsentReplyBytes = 1024 * 1024;
// Most replies a connection may have waiting for the backend at once.
inline constexpr std::size_t kMaxWaitingReplies = 1024;
// Fairness: what one connection may dispatch in one turn of the loop, in
// operations (a line is one, a reportBatch one per entry) and in bytes of
// replies made at once, before it lets every other ready connection have its
// turn. One line always goes through, so a `list` page (up to ~200 KB) or a
// batch of 1000 reports costs one turn; 20 connections flooding them keep a
// writer waiting for 20 pages at most, not 20 megabytes.
inline constexpr std::size_t kMaxLinesPerTurn = 64;
inline constexpr std::size_t kMaxReplyBytesPerTurn = 64 * 1024;
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
    // Moves the connection along: dispatches what it may, writes what is
    // ready, reads when it has room, and closes when it is done. Every event
    // (a read, a write, an answer from the backend) ends here.
    void pump();
    // What this turn of pump() may still dispatch (see kMaxLinesPerTurn):
    // `lines` counts operations.
    struct TurnBudget {
        std::size_t lines = kMaxLinesPerTurn;
        std::size_t reply_bytes = kMaxReplyBytesPerTurn;
        bool spent() const { return lines == 0 || reply_bytes == 0; }
    };
    void dispatch_lines(TurnBudget& budget);
    // Over the output bound: dispatch nothing more until the client reads.
    bool over_bound() const;
    // Starts writing what is ready (replies, or events behind them); true
    // when it wrote something (at once, or started an async write).
    bool write_ready();
    void write_out();
    void on_written(const boost::system::error_code& ec);
    void read_more();
    void on_read(const boost::system::error_code& ec, std::size_t n);
    // pump() later, from the loop: for answers that arrive inside someone
    // else's call stack (a commit, a Redis reply).
    void post_pump();
    // SessionSet's turn queue gives this session its next turn.
    friend class SessionSet;
    void take_turn();
    bool waiting_turn_ = false;
    // After a fatal protocol error: stop sending, read and discard what the
    // client still sends until it closes, so our last reply is not lost to a
    // reset caused by unread input.
    void drain_then_close();
    void close();
    // Closes the connection once it has been idle for the idle timeout.
    void arm_idle_timer();
    // Closes the connection when an unfinished line is not finished in time.
    void note_partial_line();
    void arm_request_timer();

    // Watch mode.
    void start_watching(WatchFilter filter);
    void watch_read();
    bool flush_events();
    void overflow();

    Socket socket_;
    SessionShared shared_;
    RequestContext ctx_; // the peer, its level, and the reply queue

    LineBuffer in_;
    // Where input we ignore goes (after a fatal error, or on a watch).
    std::array<char, 4096> discard_;
    std::shared_ptr<ReplyQueue> replies_; // also in ctx_
    std::string out_;                     // the batch being written

    bool reading_ = false;
    bool writing_ = false;
    bool stopping_ = false;
    bool peer_done_ = false; // the client sent EOF: answer what it sent, then close
    bool pump_posted_ = false;
    bool close_after_write_ = false;
    bool closed_ = false;
    std::size_t drained_bytes_ = 0;

    bool watching_ = false;
    bool overflowed_ = false;
    std::uint64_t dropped_ = 0;
    std::deque<std::shared_ptr<const std::string>> events_; // not yet written
    boost::asio::steady_timer overflow_deadline_;

    boost::asio::steady_timer idle_timer_;
    std::chrono::steady_clock::time_point last_request_; // the last complete line
    boost::asio::steady_timer request_timer_;
    // When the unfinished line now in the buffer began; unset while the
    // buffer holds no unfinished line.
    std::optional<std::chrono::steady_clock::time_point> partial_since_;
    bool request_timer_armed_ = false;
};

} // namespace cbd
