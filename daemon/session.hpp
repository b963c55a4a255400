// One client connection: owns its input buffer (bounded by the line limit)
// and its output batch. It reads, hands every complete line to the
// dispatcher, writes all the replies in one go, and only then reads again, so
// a client that never reads cannot make us buffer without bound. After a
// `watch` request the connection turns into an event stream: the session
// queues event lines (up to a bound) and only reads to notice the client
// leaving. I/O only: the dispatcher decides every reply.
#pragma once

#include "daemon/access.hpp"
#include "daemon/commit_gate.hpp"
#include "daemon/dispatcher.hpp"
#include "daemon/event_hub.hpp"
#include "daemon/line_buffer.hpp"
#include "daemon/peer.hpp"
#include "daemon/stats.hpp"

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <array>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

namespace cbd {

class Session;

// The live sessions, so shutdown can reach them. It must outlive the
// io_context: a session still queued there when the loop is torn down leaves
// the set from its destructor.
class SessionSet {
  public:
    explicit SessionSet(DaemonStats& stats) : stats_(stats) {}
    void add(Session* s);
    void remove(Session* s);
    std::size_t size() const { return sessions_.size(); }

    // Stops every session; `on_empty` runs once the last one has closed (at
    // once if there is none).
    void stop_all(std::function<void()> on_empty);

  private:
    DaemonStats& stats_;
    std::unordered_set<Session*> sessions_;
    std::function<void()> on_empty_;
};

// What every session shares.
struct SessionShared {
    Dispatcher& dispatcher;
    SessionSet& sessions;
    EventHub& events;
    DaemonStats& stats;
    const AccessConfig& access; // read when a connection opens
    std::size_t max_line_bytes;
    std::size_t watch_queue;     // most event lines a watcher may have unsent
    std::size_t max_connections; // the server refuses more
    std::chrono::milliseconds idle_timeout; // 0 = never
    // Durable mode (--sync always): replies wait for the group commit.
    // nullptr otherwise.
    CommitGate* commit_gate = nullptr;
};

class Session final : public std::enable_shared_from_this<Session>,
                      public Watcher,
                      public ReplyDeferral {
  public:
    using Socket = boost::asio::local::stream_protocol::socket;

    Session(Socket socket, const SessionShared& shared);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    void start();
    // Stop reading; replies already produced are still written, then close.
    void stop();

    void push_event(const std::shared_ptr<const std::string>& line) override;
    std::shared_ptr<DeferredReply> take_slot() override;

  private:
    void read_more();
    void on_read(const boost::system::error_code& ec, std::size_t n);
    void handle_complete_lines();
    void write_out();
    // Durable mode: send the replies once the changes they report are
    // committed, turning those about undone changes into errors.
    void await_commit();
    void on_durable(const KeySet* undone);
    // After a batch: send now, or wait for deferred replies and commits.
    void finish_batch();
    // Puts completed deferred replies in their places in out_.
    void splice_deferred();
    void on_written(const boost::system::error_code& ec);
    // After a fatal protocol error: stop sending, read and discard what the
    // client still sends until it closes, so our last reply is not lost to a
    // reset caused by unread input.
    void drain_then_close();
    void close();
    // Closes the connection once it has been idle for the idle timeout.
    void arm_idle_timer();

    // Watch mode.
    void start_watching(WatchFilter filter);
    void watch_read();
    void flush_events();
    void overflow();

    Socket socket_;
    SessionShared shared_;
    Peer peer_;
    AccessLevel level_;

    LineBuffer in_;
    // Where input we ignore goes (after a fatal error, or on a watch).
    std::array<char, 4096> discard_;
    std::string out_; // the batch being written, or being built
    // Durable mode: replies in out_ given while changes were uncommitted,
    // with the key each concerns, so a failed commit can rewrite them.
    struct HeldReply {
        std::size_t begin;
        std::size_t end;
        std::string key;
        std::string id_json;
    };
    std::vector<HeldReply> held_;
    // Replies a remote store completes later, at their positions in out_.
    std::vector<std::pair<std::size_t, std::shared_ptr<DeferredReply>>> deferred_;
    std::size_t deferred_open_ = 0; // not yet complete
    bool in_batch_ = false;         // dispatching: completions only count
    bool awaiting_deferred_ = false;

    bool reading_ = false;
    bool writing_ = false;
    bool stopping_ = false;
    bool close_after_write_ = false;
    bool closed_ = false;
    std::size_t drained_bytes_ = 0;

    bool watching_ = false;
    bool overflowed_ = false;
    std::uint64_t dropped_ = 0;
    std::deque<std::shared_ptr<const std::string>> events_; // not yet written
    boost::asio::steady_timer overflow_deadline_;

    boost::asio::steady_timer idle_timer_;
    std::chrono::steady_clock::time_point last_request_;
};

} // namespace cbd
