// One client connection: owns its input buffer (bounded by the line limit)
// and its output batch. It reads, hands every complete line to the
// dispatcher, writes all the replies in one go, and only then reads again, so
// a client that never reads cannot make us buffer without bound. I/O only: the
// dispatcher decides every reply.
#pragma once

#include "daemon/dispatcher.hpp"
#include "daemon/peer.hpp"

#include <boost/asio/local/stream_protocol.hpp>
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
    void add(Session* s) { sessions_.insert(s); }
    void remove(Session* s);
    std::size_t size() const { return sessions_.size(); }

    // Stops every session; `on_empty` runs once the last one has closed (at
    // once if there is none).
    void stop_all(std::function<void()> on_empty);

  private:
    std::unordered_set<Session*> sessions_;
    std::function<void()> on_empty_;
};

class Session : public std::enable_shared_from_this<Session> {
  public:
    using Socket = boost::asio::local::stream_protocol::socket;

    Session(Socket socket, Dispatcher& dispatcher, SessionSet& sessions,
            std::size_t max_line_bytes);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    void start();
    // Stop reading; replies already produced are still written, then close.
    void stop();

  private:
    void read_more();
    void on_read(const boost::system::error_code& ec, std::size_t n);
    void handle_complete_lines();
    void write_replies();
    void on_written(const boost::system::error_code& ec);
    // After a fatal protocol error: stop sending, read and discard what the
    // client still sends until it closes, so our last reply is not lost to a
    // reset caused by unread input.
    void drain_then_close();
    void close();

    Socket socket_;
    Dispatcher& dispatcher_;
    SessionSet& sessions_;
    Peer peer_;
    const std::size_t max_line_bytes_;

    std::vector<char> in_;   // grows up to max_line_bytes_ + 1
    std::size_t in_used_ = 0;
    std::string out_;        // replies to the lines of the last read

    bool reading_ = false;
    bool stopping_ = false;
    bool close_after_write_ = false;
    std::size_t drained_bytes_ = 0;
};

} // namespace cbd
