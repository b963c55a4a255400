// One connection to Redis, on the event loop. hiredis (Debian's
// libhiredis-dev) does the protocol: redisFormatCommandArgv() writes
// commands and its reader parses replies. Asio does the I/O, as for every
// other socket of the daemon.
//
// Why not hiredis's async API with an Asio adapter, or a connection thread:
// what this daemon needs from a Redis connection is control over failure —
// a deadline on every command (a frozen Redis accepts connections and never
// answers), failing everything in flight at once, reconnecting with backoff —
// and hiredis 0.14's async layer has no timeouts and forbids freeing its
// context from its own callbacks, which is exactly where we learn of
// failures. A thread would add a lock and a hand-off to every operation.
// Replies come back in command order, so pending callbacks are a FIFO.
#pragma once

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct redisReader;
struct redisReply;

namespace cbd {

struct RedisEndpoint {
    std::string unix_path; // set for unix://PATH
    std::string host;      // else tcp://HOST:PORT
    unsigned short port = 6379;

    // Parses "unix:///path/to.sock" or "tcp://host:port"; returns the error.
    static std::optional<std::string> parse(std::string_view url, RedisEndpoint& out);
    std::string describe() const;
};

struct RedisOptions {
    RedisEndpoint endpoint;
    std::string password; // empty: no AUTH
    std::chrono::milliseconds timeout{1000};
    std::string what = "Redis"; // in log lines: "Redis", "Redis Sentinel"
};

class RedisConnection {
  public:
    // nullptr when Redis did not answer (unreachable, timed out, connection
    // lost); `error` then says why.
    using Callback = std::function<void(const redisReply* reply, const std::string& error)>;
    // Commands sent first on every new connection (AUTH is added before
    // them), each with what to do with its reply. An error reply to one takes
    // the connection down, and so does an on_reply that returns a reason (a
    // ROLE check that finds a replica).
    struct SetupCommand {
        std::vector<std::string> argv;
        std::function<std::optional<std::string>(const redisReply&)> on_reply;
    };
    using Setup = std::vector<SetupCommand>;
    // Told when the connection is ready (true: connected, AUTH and every
    // set-up command succeeded) or goes down (false).
    using StateChange = std::function<void(bool up, const std::string& why)>;

    RedisConnection(boost::asio::io_context& io, RedisOptions options, Setup setup,
                    StateChange on_state);
    ~RedisConnection();

    void start();
    void stop();
    bool up() const { return state_ == State::Up; }
    // Up, and AUTH and every set-up command answered.
    bool ready() const { return ready_; }
    // Why a command cannot be sent now (when not up).
    std::string why_down() const;
    const RedisEndpoint& endpoint() const { return options_.endpoint; }

    // Moves to another Redis (a new master): everything in flight fails with
    // `why`, and the connection to `to` is made now, not after a backoff.
    // Also the first start when the address was not known before.
    void retarget(const RedisEndpoint& to, const std::string& why);
    // The next connection attempt goes to `to` (a sentinel that failed gives
    // way to the next); a connection that is up stays where it is.
    void set_endpoint(const RedisEndpoint& to) { options_.endpoint = to; }
    // Drops the connection as a failure (READONLY: the master is a replica
    // now), failing what is in flight, and reconnects with backoff.
    void drop(const std::string& why) { fail(why); }

    // Sends a command; `done` runs once with its reply, or with nullptr when
    // it failed. Fails at once while the connection is down.
    void command(const std::vector<std::string_view>& argv, Callback done);

    // Subscriber connections: every reply with no command waiting for it
    // (a published message) goes here.
    void on_push(std::function<void(const redisReply*)> handler) { on_push_ = std::move(handler); }

  private:
    enum class State { Down, Connecting, Up, Stopped };
    struct Pending {
        Callback done;
        std::chrono::steady_clock::time_point deadline;
        bool internal; // a setup command: its failure takes the connection down
    };

    void connect();
    void on_connected();
    // AUTH and every set-up command answered: logs "connected", tells on_state.
    void on_ready();
    void send(const std::vector<std::string_view>& argv, Callback done, bool internal);
    void flush();
    void read_more();
    void arm_deadline();
    // Fails every pending command, closes the socket, and reconnects later.
    void fail(const std::string& why);
    // Closes the socket and fails every pending command with `why`.
    void close_and_fail_pending(const std::string& why);

    boost::asio::io_context& io_;
    RedisOptions options_;
    Setup setup_;
    StateChange on_state_;
    std::function<void(const redisReply*)> on_push_;

    State state_ = State::Down;
    boost::asio::generic::stream_protocol::socket socket_;
    boost::asio::steady_timer deadline_;
    boost::asio::steady_timer retry_;
    std::chrono::milliseconds backoff_{100};
    std::chrono::steady_clock::time_point ready_at_; // when it last became ready
    bool flapping_ = false; // it failed soon after becoming ready: quiet, backing off
    redisReader* reader_ = nullptr;
    std::deque<Pending> pending_;
    std::string out_;     // formatted commands not yet handed to the socket
    std::string writing_; // what the socket is writing now
    bool write_busy_ = false;
    std::vector<char> in_;
    bool ready_ = false;               // Up, and AUTH and the set-up have succeeded
    std::size_t setup_unanswered_ = 0; // AUTH and set-up commands not yet answered
    std::uint64_t epoch_ = 0;          // bumped on every (re)connect; stale handlers see the change
};

} // namespace cbd
