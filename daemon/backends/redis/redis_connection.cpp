// RedisConnection (see redis_connection.hpp).
#include "daemon/backends/redis/redis_connection.hpp"

#include "daemon/core/log.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/write.hpp>
#include <charconv>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

namespace cbd {

namespace asio = boost::asio;

namespace {
constexpr auto kMaxBackoff = std::chrono::milliseconds(2000);
// Up this long before it failed: an outage of a working connection, not a
// server that keeps failing right after the set-up.
constexpr auto kStableAfter = std::chrono::milliseconds(1000);
constexpr std::size_t kReadChunk = 64 * 1024;
} // namespace

std::optional<std::string> RedisEndpoint::parse(std::string_view url, RedisEndpoint& out) {
    out = RedisEndpoint{};
    if (url.starts_with("unix://")) {
        out.unix_path = std::string(url.substr(7));
        if (out.unix_path.empty() || out.unix_path[0] != '/')
            return "a unix:// address needs an absolute path (unix:///run/redis/redis.sock)";
        return std::nullopt;
    }
    if (url.starts_with("tcp://")) {
        auto rest = url.substr(6);
        const auto colon = rest.rfind(':');
        if (colon == std::string_view::npos || colon == 0)
            return "a tcp:// address needs a host and a port (tcp://127.0.0.1:6379)";
        out.host = std::string(rest.substr(0, colon));
        if (out.host == "localhost")
            out.host = "127.0.0.1";
        const auto port = rest.substr(colon + 1);
        unsigned value = 0;
        auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
        if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535)
            return "'" + std::string(port) + "' is not a port";
        out.port = static_cast<unsigned short>(value);
        boost::system::error_code bad;
        asio::ip::make_address(out.host, bad);
        if (bad)
            return "'" + out.host + "' is not an IP address (names are not resolved)";
        return std::nullopt;
    }
    return "the Redis address must start with unix:// or tcp://";
}

std::string RedisEndpoint::describe() const {
    return unix_path.empty() ? "tcp://" + host + ":" + std::to_string(port) : "unix://" + unix_path;
}

RedisConnection::RedisConnection(asio::io_context& io, RedisOptions options, Setup setup,
                                 StateChange on_state)
    : io_(io), options_(std::move(options)), setup_(std::move(setup)),
      on_state_(std::move(on_state)), socket_(io), deadline_(io), retry_(io), in_(kReadChunk) {}

RedisConnection::~RedisConnection() {
    if (reader_)
        redisReaderFree(reader_);
}

void RedisConnection::start() {
    connect();
}

void RedisConnection::stop() {
    state_ = State::Stopped;
    ++epoch_;
    boost::system::error_code ignored;
    socket_.close(ignored);
    deadline_.cancel();
    retry_.cancel();
    auto pending = std::move(pending_);
    pending_.clear();
    for (auto& p : pending)
        p.done(nullptr, "cbd is stopping");
}

void RedisConnection::connect() {
    if (state_ == State::Stopped)
        return;
    state_ = State::Connecting;
    ++epoch_;
    if (reader_)
        redisReaderFree(reader_);
    reader_ = redisReaderCreate();
    out_.clear();
    writing_.clear();
    write_busy_ = false;

    asio::generic::stream_protocol::endpoint endpoint;
    if (!options_.endpoint.unix_path.empty())
        endpoint = asio::local::stream_protocol::endpoint(options_.endpoint.unix_path);
    else
        endpoint = asio::ip::tcp::endpoint(asio::ip::make_address(options_.endpoint.host),
                                           options_.endpoint.port);
    boost::system::error_code ec;
    socket_ = asio::generic::stream_protocol::socket(io_);
    socket_.open(endpoint.protocol(), ec);
    if (ec) {
        fail("cannot open a socket: " + ec.message());
        return;
    }
    const auto epoch = epoch_;
    deadline_.expires_after(options_.timeout);
    deadline_.async_wait([this, epoch](const boost::system::error_code& wait_ec) {
        if (!wait_ec && epoch == epoch_ && state_ == State::Connecting)
            fail("no connection within " + std::to_string(options_.timeout.count()) + " ms");
    });
    socket_.async_connect(endpoint, [this, epoch](const boost::system::error_code& connect_ec) {
        if (epoch != epoch_)
            return;
        if (connect_ec) {
            fail("cannot connect: " + connect_ec.message());
            return;
        }
        on_connected();
    });
}

void RedisConnection::on_connected() {
    deadline_.cancel();
    if (options_.endpoint.unix_path.empty()) {
        boost::system::error_code ignored;
        socket_.set_option(asio::detail::socket_option::boolean<IPPROTO_TCP, TCP_NODELAY>(true),
                           ignored);
    }
    // Commands may be sent from now on: Redis answers in order, so they
    // queue behind AUTH and the set-up, and fail with them if one is refused.
    state_ = State::Up;
    ready_ = false;
    setup_unanswered_ = setup_.size() + (options_.password.empty() ? 0 : 1);
    const auto epoch = epoch_;
    using Check = std::function<std::optional<std::string>(const redisReply&)>;
    auto checked = [this, epoch](Check then) {
        return [this, epoch, then = std::move(then)](const redisReply* reply, const std::string&) {
            if (!reply)
                return; // the connection is already failing
            if (reply->type == REDIS_REPLY_ERROR) {
                fail("Redis refused the connection's set-up: " +
                     std::string(reply->str, reply->len));
                return;
            }
            if (then)
                if (auto refused = then(*reply)) {
                    fail(*refused);
                    return;
                }
            if (epoch == epoch_ && --setup_unanswered_ == 0)
                on_ready();
        };
    };
    if (!options_.password.empty())
        send({"AUTH", options_.password}, checked(nullptr), true);
    for (const auto& cmd : setup_) {
        std::vector<std::string_view> argv(cmd.argv.begin(), cmd.argv.end());
        send(argv, checked(cmd.on_reply), true);
    }
    read_more();
    if (setup_unanswered_ == 0)
        on_ready();
}

void RedisConnection::on_ready() {
    // Only now is the connection known to work: a wrong password or a
    // refused SCRIPT LOAD fails before this, and must not read as connected.
    ready_ = true;
    ready_at_ = std::chrono::steady_clock::now();
    if (!flapping_)
        log_info("connected to " + options_.what + " at " + options_.endpoint.describe());
    if (on_state_)
        on_state_(true, "");
}

std::string RedisConnection::why_down() const {
    const bool known = !options_.endpoint.host.empty() || !options_.endpoint.unix_path.empty();
    return state_ == State::Stopped ? "cbd is stopping"
           : known                  ? "not connected to Redis at " + options_.endpoint.describe()
                                    : "no Redis master known yet (asking the sentinels)";
}

void RedisConnection::command(const std::vector<std::string_view>& argv, Callback done) {
    if (state_ != State::Up) {
        done(nullptr, why_down());
        return;
    }
    send(argv, std::move(done), false);
}

void RedisConnection::send(const std::vector<std::string_view>& argv, Callback done,
                           bool internal) {
    std::vector<const char*> ptrs;
    std::vector<std::size_t> lens;
    ptrs.reserve(argv.size());
    lens.reserve(argv.size());
    for (auto a : argv) {
        ptrs.push_back(a.data());
        lens.push_back(a.size());
    }
    char* formatted = nullptr;
    const int n =
        redisFormatCommandArgv(&formatted, static_cast<int>(argv.size()), ptrs.data(), lens.data());
    if (n < 0) {
        done(nullptr, "out of memory formatting a command");
        return;
    }
    out_.append(formatted, static_cast<std::size_t>(n));
    redisFreeCommand(formatted);
    const bool was_idle = pending_.empty();
    pending_.push_back(
        Pending{std::move(done), std::chrono::steady_clock::now() + options_.timeout, internal});
    if (was_idle)
        arm_deadline();
    flush();
}

void RedisConnection::flush() {
    if (write_busy_ || out_.empty() || state_ != State::Up)
        return;
    write_busy_ = true;
    writing_.swap(out_);
    out_.clear();
    const auto epoch = epoch_;
    asio::async_write(socket_, asio::buffer(writing_),
                      [this, epoch](const boost::system::error_code& ec, std::size_t) {
                          if (epoch != epoch_)
                              return;
                          write_busy_ = false;
                          writing_.clear();
                          if (ec) {
                              fail("write failed: " + ec.message());
                              return;
                          }
                          flush();
                      });
}

void RedisConnection::read_more() {
    const auto epoch = epoch_;
    socket_.async_read_some(asio::buffer(in_),
                            [this, epoch](const boost::system::error_code& ec, std::size_t n) {
                                if (epoch != epoch_)
                                    return;
                                if (ec) {
                                    fail(ec == asio::error::eof ? "Redis closed the connection"
                                                                : "read failed: " + ec.message());
                                    return;
                                }
                                redisReaderFeed(reader_, in_.data(), n);
                                for (;;) {
                                    void* raw = nullptr;
                                    if (redisReaderGetReply(reader_, &raw) != REDIS_OK) {
                                        fail("unreadable reply from Redis");
                                        return;
                                    }
                                    if (!raw)
                                        break;
                                    auto* reply = static_cast<redisReply*>(raw);
                                    if (pending_.empty()) {
                                        if (on_push_)
                                            on_push_(reply);
                                        freeReplyObject(reply);
                                        continue;
                                    }
                                    Pending p = std::move(pending_.front());
                                    pending_.pop_front();
                                    p.done(reply, "");
                                    freeReplyObject(reply);
                                    if (epoch != epoch_)
                                        return; // the callback failed the connection
                                }
                                arm_deadline();
                                read_more();
                            });
}

void RedisConnection::arm_deadline() {
    if (pending_.empty() || state_ != State::Up)
        return;
    const auto epoch = epoch_;
    deadline_.expires_at(pending_.front().deadline);
    deadline_.async_wait([this, epoch](const boost::system::error_code& ec) {
        if (ec || epoch != epoch_ || pending_.empty())
            return;
        if (pending_.front().deadline <= std::chrono::steady_clock::now())
            fail("Redis did not answer within " + std::to_string(options_.timeout.count()) + " ms");
        else
            arm_deadline();
    });
}

void RedisConnection::close_and_fail_pending(const std::string& why) {
    ready_ = false;
    state_ = State::Down;
    ++epoch_;
    boost::system::error_code ignored;
    socket_.close(ignored);
    deadline_.cancel();
    retry_.cancel();
    auto pending = std::move(pending_);
    pending_.clear();
    for (auto& p : pending)
        p.done(nullptr, why);
}

void RedisConnection::fail(const std::string& why) {
    if (state_ == State::Stopped)
        return;
    // A connection refused at set-up (a wrong password) never was ready:
    // the backoff grows and only its first failure is logged, not one line
    // every 100 ms.
    const bool was_ready = ready_;
    close_and_fail_pending(why);
    if (state_ == State::Stopped)
        return; // a pending command's callback stopped us
    // A connection that was up a while starts the backoff again; one that
    // dies soon after coming up (a server that accepts, then answers
    // garbage) keeps backing off, and is logged once, not every retry.
    const bool stable = was_ready && std::chrono::steady_clock::now() - ready_at_ >= kStableAfter;
    const bool was_flapping = flapping_;
    if (stable) {
        backoff_ = std::chrono::milliseconds(100);
        flapping_ = false;
    } else if (was_ready) {
        flapping_ = true;
    }
    if (stable || (was_ready && !was_flapping) ||
        (!was_ready && !flapping_ && backoff_ == std::chrono::milliseconds(100)))
        log_warn(options_.what + " at " + options_.endpoint.describe() + ": " + why + "; retrying");
    if (on_state_)
        on_state_(false, why);
    if (state_ != State::Down)
        return; // on_state moved the connection elsewhere (retarget)
    retry_.expires_after(backoff_);
    backoff_ = std::min(backoff_ * 2, kMaxBackoff);
    const auto epoch = epoch_;
    retry_.async_wait([this, epoch](const boost::system::error_code& ec) {
        if (!ec && epoch == epoch_ && state_ == State::Down)
            connect();
    });
}

void RedisConnection::retarget(const RedisEndpoint& to, const std::string& why) {
    if (state_ == State::Stopped)
        return;
    const bool was_up = state_ != State::Down;
    options_.endpoint = to;
    close_and_fail_pending(why);
    if (was_up && on_state_)
        on_state_(false, why);
    if (state_ != State::Down)
        return;
    backoff_ = std::chrono::milliseconds(100);
    flapping_ = false;
    connect();
}

} // namespace cbd
