// HttpServer (see http_server.hpp): the accept loop with its eviction rule,
// HttpConnection for requests, and HttpEventStream for /api/events.
#include "daemon/http/http_server.hpp"

#include "common/reply.hpp"
#include "daemon/core/log.hpp"
#include "daemon/core/startup_error.hpp"
#include "daemon/http/http_dashboard.hpp"

#include <array>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <memory>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace cbd {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Shared = HttpServer::Shared;

namespace {

// How long a request head may take to arrive, from the accept or from its
// first byte on a keep-alive connection, however slowly its bytes come (as
// nginx's client_header_timeout); then a 408 and the close.
constexpr auto kHeaderTimeout = std::chrono::seconds(5);
// How long a keep-alive connection may wait for its next request (Apache's
// KeepAliveTimeout): a scraper every 15 s simply opens a new one.
constexpr auto kIdleTimeout = std::chrono::seconds(5);
// How long a client has to take its answer.
constexpr auto kWriteTimeout = std::chrono::seconds(5);
// How long an answer from the backend (Redis) is waited for; then a 504.
constexpr auto kBackendTimeout = std::chrono::seconds(5);
// After the last answer, what the client still sends (an unread body) is
// taken for this long, or this much, so that the close is not a reset.
constexpr auto kLingerTimeout = std::chrono::seconds(2);
constexpr std::size_t kLingerBytes = 64 * 1024;
// Idle event streams get a comment this often, so proxies keep them and a
// client that is gone is noticed.
constexpr auto kKeepaliveInterval = std::chrono::seconds(15);
// How long a stream that fell behind has to take its overflow message.
constexpr auto kOverflowGrace = std::chrono::seconds(5);

// What /api/events sends before any event: the headers (the body is
// delimited by the close), and the reconnect delay EventSource should use.
constexpr std::string_view kEventStreamHead = "HTTP/1.1 200 OK\r\n"
                                              "Server: cbd\r\n"
                                              "Content-Type: text/event-stream; charset=utf-8\r\n"
                                              "Cache-Control: no-store\r\n"
                                              "X-Content-Type-Options: nosniff\r\n"
                                              "Connection: close\r\n"
                                              "\r\n"
                                              "retry: 2000\n\n";

std::string describe(const tcp::socket& socket) {
    boost::system::error_code ec;
    const auto ep = socket.remote_endpoint(ec);
    return ec ? std::string("?") : ep.address().to_string() + ":" + std::to_string(ep.port());
}

} // namespace

// One /api/events client: a Watcher like a watching Session, with the same
// bounded queue (SseQueue) and the same fate when it falls behind: it loses
// its queue, gets one overflow message and is closed (at once if it does not
// take that within kOverflowGrace).
class HttpEventStream final : public std::enable_shared_from_this<HttpEventStream>, public Watcher {
  public:
    HttpEventStream(tcp::socket socket, std::shared_ptr<Shared> shared, WatchFilter filter)
        : socket_(std::move(socket)), shared_(std::move(shared)), filter_(std::move(filter)),
          queue_(shared_->options.event_queue), keepalive_(socket_.get_executor()),
          overflow_deadline_(socket_.get_executor()), who_(describe(socket_)) {}

    ~HttpEventStream() {
        if (subscribed_)
            shared_->events.remove(this);
        shared_->streams.erase(this);
    }

    void start() {
        shared_->streams.insert(this);
        shared_->events.add(this, filter_);
        subscribed_ = true;
        log_debug("event stream opened for " + who_);
        out_ = kEventStreamHead; // goes out with whatever events are queued by then
        write_next();
        read_until_gone();
        arm_keepalive();
    }

    void push_event(const std::shared_ptr<const std::string>& line) override {
        if (closed_)
            return;
        if (queue_.push(line)) {
            shared_->stats.events_emitted += 1;
        } else if (subscribed_) {
            overflow();
        }
        write_next();
    }

    void close() {
        if (closed_)
            return;
        closed_ = true;
        unsubscribe();
        shared_->streams.erase(this);
        keepalive_.cancel();
        overflow_deadline_.cancel();
        boost::system::error_code ignored;
        socket_.close(ignored);
    }

  private:
    void unsubscribe() {
        if (subscribed_) {
            shared_->events.remove(this);
            subscribed_ = false;
        }
    }

    void overflow() {
        unsubscribe();
        shared_->stats.events_dropped += queue_.dropped();
        log_warn("event stream " + who_ + " fell " + std::to_string(shared_->options.event_queue) +
                 " events behind; dropping it");
        // A client that reads nothing would never take its overflow message.
        overflow_deadline_.expires_after(kOverflowGrace);
        overflow_deadline_.async_wait(
            [self = shared_from_this()](const boost::system::error_code& ec) {
                if (!ec)
                    self->close();
            });
    }

    // Writes what is owed (queued events, or a keepalive when there are
    // none) unless a write is pending; on_written() comes back here.
    void write_next() {
        if (writing_ || closed_)
            return;
        queue_.take(out_);
        if (out_.empty() && keepalive_due_)
            out_ = kSseKeepalive;
        keepalive_due_ = false;
        if (out_.empty()) {
            if (queue_.overflowed())
                close(); // the overflow message is out
            return;
        }
        writing_ = true;
        asio::async_write(socket_, asio::buffer(out_),
                          [self = shared_from_this()](const boost::system::error_code& ec,
                                                      std::size_t) { self->on_written(ec); });
    }

    void on_written(const boost::system::error_code& ec) {
        writing_ = false;
        out_.clear();
        if (ec) {
            close();
            return;
        }
        write_next();
    }

    // Nothing the client sends means anything; reading only tells us when
    // it has gone.
    void read_until_gone() {
        socket_.async_read_some(
            asio::buffer(discard_),
            [self = shared_from_this()](const boost::system::error_code& ec, std::size_t) {
                if (ec)
                    self->close();
                else
                    self->read_until_gone();
            });
    }

    void arm_keepalive() {
        keepalive_.expires_after(kKeepaliveInterval);
        keepalive_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
            if (ec || self->closed_)
                return;
            self->keepalive_due_ = true;
            self->write_next();
            self->arm_keepalive();
        });
    }

    tcp::socket socket_;
    std::shared_ptr<Shared> shared_;
    WatchFilter filter_;
    SseQueue queue_;
    std::string out_; // being written
    std::array<char, 512> discard_;
    asio::steady_timer keepalive_;
    asio::steady_timer overflow_deadline_;
    std::string who_;
    bool subscribed_ = false;
    bool writing_ = false;
    bool keepalive_due_ = false;
    bool closed_ = false;
};

// One HTTP connection: request heads read with an HttpHeadReader and
// answered in turn (keep-alive, pipelined requests in order) until the
// client, a bound or a refusal ends it. Its phase says what it waits for and
// since_ when that wait began: at the limit, the connection that has waited
// longest for a request (or for its answer to be taken) is closed to make
// room, so a client cannot hold a place by keeping a connection open or by
// trickling bytes into it: trickled bytes do not make a connection younger.
class HttpConnection : public std::enable_shared_from_this<HttpConnection> {
  public:
    enum class Phase {
        Waiting,   // for a request head, or the rest of one
        Answering, // for the backend's answer to an /api request (Redis)
        Writing,   // a response
        Lingering, // after the last response: taking what the client still sends
        Closed,
    };

    HttpConnection(tcp::socket socket, std::shared_ptr<Shared> shared)
        : socket_(std::move(socket)), shared_(std::move(shared)), deadline_(socket_.get_executor()),
          since_(std::chrono::steady_clock::now()) {
        shared_->connections.insert(this);
    }
    ~HttpConnection() {
        if (replies_)
            replies_->on_front_ready = nullptr;
        shared_->connections.erase(this);
    }
    HttpConnection(const HttpConnection&) = delete;
    HttpConnection& operator=(const HttpConnection&) = delete;

    // A new connection's first head is due kHeaderTimeout after the accept,
    // however its bytes arrive.
    void start() {
        arm(kHeaderTimeout);
        read_more();
    }

    // May it be closed to make room? Not while the backend answers it: that
    // wait is bounded (kBackendTimeout) and its request was a good one.
    bool evictable() const { return phase_ != Phase::Answering && phase_ != Phase::Closed; }
    std::chrono::steady_clock::time_point since() const { return since_; }

    // Closes at once, with no answer (to make room, or at shutdown).
    void close() {
        if (phase_ == Phase::Closed)
            return;
        phase_ = Phase::Closed;
        shared_->connections.erase(this);
        ++timer_generation_;
        deadline_.cancel();
        boost::system::error_code ignored;
        socket_.close(ignored);
    }

    // At shutdown: a connection waiting for a request closes now; one being
    // answered closes once the answer is out.
    void stop() {
        if (phase_ == Phase::Waiting || phase_ == Phase::Lingering)
            close();
    }

    std::string who() const { return describe(socket_); }

  private:
    void enter(Phase phase) {
        phase_ = phase;
        since_ = std::chrono::steady_clock::now();
    }

    // One deadline per phase; a handler from an earlier arm() does nothing.
    void arm(std::chrono::steady_clock::duration timeout) {
        const auto generation = ++timer_generation_;
        deadline_.expires_after(timeout);
        deadline_.async_wait(
            [self = shared_from_this(), generation](const boost::system::error_code& ec) {
                if (!ec && generation == self->timer_generation_)
                    self->on_deadline();
            });
    }

    void on_deadline() {
        switch (phase_) {
        case Phase::Waiting:
            if (reader_.state() == HttpHeadReader::State::Partial) {
                log_debug("HTTP request head from " + who() + " not complete in time");
                refuse({408, "the request head did not arrive in time"});
            } else {
                close(); // idle: nothing to answer
            }
            return;
        case Phase::Answering:
            respond(504, "text/plain", "the backend did not answer in time\n");
            return;
        case Phase::Writing:   // the client does not take its answer
        case Phase::Lingering: // nor close
        case Phase::Closed:
            close();
            return;
        }
    }

    // At most one read is pending: in Waiting it brings the head, in
    // Lingering it discards; a read begun while Waiting may complete after
    // a 408 went out, and is then only a sign of life.
    void read_more() {
        if (reading_ || phase_ == Phase::Closed)
            return;
        reading_ = true;
        socket_.async_read_some(
            asio::buffer(read_buffer_),
            [self = shared_from_this()](const boost::system::error_code& ec, std::size_t n) {
                self->on_read(ec, n);
            });
    }

    void on_read(const boost::system::error_code& ec, std::size_t n) {
        reading_ = false;
        switch (phase_) {
        case Phase::Closed:
            return;
        case Phase::Lingering:
            lingered_ += n;
            if (ec || lingered_ > kLingerBytes)
                close();
            else
                read_more();
            return;
        case Phase::Answering:
        case Phase::Writing:
            if (ec)
                close(); // the client left before its answer (a 408) went out
            return;      // the bytes are ignored: this connection closes after the answer
        case Phase::Waiting:
            break;
        }
        if (ec) {
            close(); // the client left (or reset)
            return;
        }
        if (awaiting_first_byte_) {
            // A keep-alive connection's next head starts: it now has the
            // head's deadline, not the idle one.
            awaiting_first_byte_ = false;
            arm(kHeaderTimeout);
        }
        go_on(reader_.feed({read_buffer_.data(), n}));
    }

    void go_on(HttpHeadReader::State state) {
        switch (state) {
        case HttpHeadReader::State::Empty:
        case HttpHeadReader::State::Partial:
            read_more();
            return;
        case HttpHeadReader::State::Complete:
            answer(reader_.head());
            return;
        case HttpHeadReader::State::Refused:
            log_debug("HTTP request from " + who() + " refused (" +
                      std::to_string(reader_.refusal().status) + "): " + reader_.refusal().reason);
            refuse(reader_.refusal());
            return;
        }
    }

    void refuse(const HttpRefusal& refusal) {
        keep_alive_ = false;
        head_only_ = false;
        if (refusal.status == 405)
            fields_.emplace_back("Allow", "GET, HEAD");
        respond(refusal.status, "text/plain", refusal.reason + "\n");
    }

    void answer(const HttpRequestHead& head) {
        enter(Phase::Answering);
        keep_alive_ = head.keep_alive;
        head_only_ = head.method == "HEAD";
        fields_.clear();
        if (!http_host_allowed(head.host, shared_->options.allow_remote)) {
            respond(421, "text/plain",
                    "the Host header must be an IP address or localhost (cbd --http-allow-remote "
                    "serves any)\n");
            return;
        }
        std::string error;
        const auto target = parse_http_target(head.target, error);
        if (!target) {
            respond(head.target.size() > kMaxHttpTargetBytes ? 414 : 400, "text/plain",
                    error + "\n");
            return;
        }
        switch (target->route) {
        case HttpRoute::Dashboard:
            // The page's script and style are inline, and it talks only to
            // this origin: nothing else may load.
            fields_.emplace_back("Content-Security-Policy",
                                 "default-src 'none'; script-src 'unsafe-inline'; style-src "
                                 "'unsafe-inline'; connect-src 'self'; img-src data:; "
                                 "frame-ancestors 'none'");
            fields_.emplace_back("Referrer-Policy", "no-referrer");
            respond(200, "text/html; charset=utf-8", std::string(dashboard_html()));
            return;
        case HttpRoute::Metrics: {
            const auto per_circuit = metrics_per_circuit(*target, error);
            if (!per_circuit) {
                respond(400, "text/plain", error + "\n");
                return;
            }
            respond(200, "text/plain; version=0.0.4; charset=utf-8",
                    head_only_ ? std::string() : shared_->dispatcher.metrics_text(*per_circuit));
            return;
        }
        case HttpRoute::Circuits:
        case HttpRoute::Policy:
            run_api(*target);
            return;
        case HttpRoute::Events:
            open_event_stream(*target);
            return;
        case HttpRoute::NotFound:
            break;
        }
        respond(404, "text/plain",
                "not found; served here: / /metrics /api/circuits /api/policy /api/events\n");
    }

    void run_api(const HttpTarget& target) {
        std::string error;
        const auto line = api_request_line(target, error);
        if (!line) {
            std::string body;
            append_error_reply(body, {}, ErrorCode::InvalidRequest, error);
            respond(400, "application/json", std::move(body));
            return;
        }
        // A read-level peer: the dispatcher refuses anything that writes, so
        // this door cannot change state whatever line reaches it.
        replies_ = std::make_shared<ReplyQueue>();
        api_reply_.clear();
        RequestContext ctx;
        ctx.level = AccessLevel::Read;
        ctx.replies = replies_;
        // An answer that comes later (Redis) fills the slot inside the
        // backend's call stack: answer from the loop instead.
        replies_->on_front_ready = [weak = weak_from_this(), executor = socket_.get_executor()] {
            asio::post(executor, [weak] {
                if (auto self = weak.lock())
                    self->answer_api();
            });
        };
        shared_->dispatcher.handle_line(*line, ctx);
        answer_api();
        if (phase_ == Phase::Answering)
            arm(kBackendTimeout); // keeps the connection alive, and bounds the wait
    }

    // Answers once the reply is whole: the dispatcher may leave an empty
    // ready slot in front of the one the backend fills later.
    void answer_api() {
        if (phase_ != Phase::Answering || !replies_)
            return;
        replies_->take_ready(api_reply_);
        if (replies_->waiting() > 0)
            return; // on_front_ready comes back here
        replies_->on_front_ready = nullptr;
        replies_.reset();
        const auto status = http_status_for_reply(api_reply_);
        respond(status, "application/json", std::move(api_reply_));
    }

    void open_event_stream(const HttpTarget& target) {
        if (head_only_) {
            respond(200, "text/event-stream", "");
            return;
        }
        if (shared_->stopped) {
            respond(503, "text/plain", "shutting down\n");
            return;
        }
        if (shared_->streams.size() >= shared_->options.max_event_clients) {
            log_debug("refused an event stream: " +
                      std::to_string(shared_->options.max_event_clients) + " already open");
            fields_.emplace_back("Retry-After", "5");
            respond(503, "text/plain",
                    "too many event streams open (cbd --http-max-event-clients)\n");
            return;
        }
        // The socket becomes the stream's, which has a cap of its own; this
        // connection's place is free.
        phase_ = Phase::Closed;
        shared_->connections.erase(this);
        ++timer_generation_;
        deadline_.cancel();
        std::make_shared<HttpEventStream>(std::move(socket_), shared_, event_filter(target))
            ->start();
    }

    void respond(unsigned status, std::string_view content_type, std::string body) {
        HttpResponse response;
        response.status = status;
        response.content_type = content_type;
        response.fields = std::move(fields_);
        fields_.clear();
        response.body = std::move(body);
        response.head_only = head_only_;
        keep_alive_ = keep_alive_ && !shared_->stopped;
        response.keep_alive = keep_alive_;
        out_ = serialize_http_response(response);
        enter(Phase::Writing);
        arm(kWriteTimeout);
        asio::async_write(socket_, asio::buffer(out_),
                          [self = shared_from_this()](const boost::system::error_code& ec,
                                                      std::size_t) { self->on_written(ec); });
    }

    void on_written(const boost::system::error_code& ec) {
        if (phase_ == Phase::Closed)
            return;
        out_.clear();
        if (ec || shared_->stopped) {
            close();
            return;
        }
        if (keep_alive_) {
            enter(Phase::Waiting);
            const auto state = reader_.next();
            awaiting_first_byte_ = state == HttpHeadReader::State::Empty;
            arm(awaiting_first_byte_ ? kIdleTimeout : kHeaderTimeout);
            go_on(state);
            return;
        }
        // Closing with unread bytes would reset the connection, and a reset
        // can destroy the answer before the client reads it: send the FIN,
        // then take what the client still sends until it closes (bounded).
        enter(Phase::Lingering);
        boost::system::error_code ignored;
        socket_.shutdown(tcp::socket::shutdown_send, ignored);
        arm(kLingerTimeout);
        read_more();
    }

    tcp::socket socket_;
    std::shared_ptr<Shared> shared_;
    asio::steady_timer deadline_;
    std::uint64_t timer_generation_ = 0;
    std::chrono::steady_clock::time_point since_;
    Phase phase_ = Phase::Waiting;
    HttpHeadReader reader_;
    std::array<char, 4096> read_buffer_{};
    bool reading_ = false;
    bool awaiting_first_byte_ = false; // a keep-alive connection between requests
    std::size_t lingered_ = 0;
    bool keep_alive_ = false;
    bool head_only_ = false;
    std::vector<std::pair<std::string, std::string>> fields_; // of the next response
    std::string out_;                                         // being written
    std::shared_ptr<ReplyQueue> replies_;                     // an /api request's reply
    std::string api_reply_;                                   // taken from replies_ so far
};

namespace {

// The answer to a newcomer when every place is taken by a request the
// backend is still answering (nothing to close to make room). Best effort:
// written without waiting, into the empty send buffer of a new socket.
constexpr std::string_view kBusyResponse = "HTTP/1.1 503 Service Unavailable\r\n"
                                           "Server: cbd\r\n"
                                           "Content-Type: text/plain\r\n"
                                           "Retry-After: 1\r\n"
                                           "Content-Length: 5\r\n"
                                           "Connection: close\r\n"
                                           "\r\n"
                                           "busy\n";

} // namespace

HttpServer::HttpServer(asio::io_context& io, const HttpServerOptions& options,
                       Dispatcher& dispatcher, EventHub& events, DaemonStats& stats)
    : acceptor_(io), accept_backoff_(io),
      shared_(std::make_shared<Shared>(Shared{dispatcher, events, stats, options, {}, {}, false})) {
    std::string error;
    const auto endpoint = parse_listen_address(options.listen, error);
    if (!endpoint)
        throw StartupError("--http-listen '" + options.listen + "': " + error);
    if (!endpoint->address().is_loopback()) {
        if (!options.allow_remote)
            throw StartupError("--http-listen " + options.listen +
                               ": not a loopback address; the dashboard and API show every "
                               "circuit to whoever can connect (pass --http-allow-remote to "
                               "serve them there anyway)");
        log_warn("--http-allow-remote: serving the dashboard, API and metrics on " +
                 options.listen +
                 ", not loopback: anyone who can reach it sees every circuit (read only); keep "
                 "it behind a firewall or an authenticating proxy");
    }
    boost::system::error_code ec;
    acceptor_.open(endpoint->protocol(), ec);
    if (!ec)
        acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec)
        acceptor_.bind(*endpoint, ec);
    if (!ec)
        acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec)
        throw StartupError("cannot listen for HTTP on " + options.listen + ": " + ec.message());
#ifdef TCP_DEFER_ACCEPT
    // A connection is handed over once its first bytes are there (or after
    // about this long): one that sends nothing costs no place, and a
    // scraper's request is read in the same turn as its accept, before a
    // later newcomer could make it the one to close.
    const int defer_seconds = static_cast<int>(kHeaderTimeout.count());
    if (::setsockopt(acceptor_.native_handle(), IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer_seconds,
                     sizeof defer_seconds) != 0)
        log_debug("TCP_DEFER_ACCEPT not set on the HTTP listener");
#endif
}

std::string HttpServer::local_endpoint() const {
    boost::system::error_code ec;
    auto ep = acceptor_.local_endpoint(ec);
    if (ec)
        return "?";
    const auto address = ep.address().to_string();
    return (ep.address().is_v6() ? "[" + address + "]" : address) + ":" + std::to_string(ep.port());
}

void HttpServer::start() {
    accept_next();
}

void HttpServer::stop() {
    shared_->stopped = true;
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    accept_backoff_.cancel();
    // close() edits the sets: iterate copies.
    const std::vector<HttpEventStream*> streams(shared_->streams.begin(), shared_->streams.end());
    for (auto* s : streams)
        s->close();
    const std::vector<HttpConnection*> connections(shared_->connections.begin(),
                                                   shared_->connections.end());
    for (auto* c : connections)
        c->stop();
}

void HttpServer::accept_next() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
        if (shared_->stopped || ec == asio::error::operation_aborted)
            return;
        if (ec) {
            // Out of descriptors: back off rather than spin.
            log_warn("HTTP accept failed: " + ec.message() + "; retrying in 100 ms");
            accept_backoff_.expires_after(std::chrono::milliseconds(100));
            accept_backoff_.async_wait([this](boost::system::error_code wait_ec) {
                if (!wait_ec && !shared_->stopped)
                    accept_next();
            });
            return;
        }
        if (shared_->connections.size() >= kMaxHttpConnections) {
            // Make room: close the connection that has waited longest for a
            // request (or for its answer to be taken), never the newcomer,
            // so held or trickling connections cannot keep others out.
            HttpConnection* oldest = nullptr;
            for (auto* c : shared_->connections)
                if (c->evictable() && (!oldest || c->since() < oldest->since()))
                    oldest = c;
            if (oldest) {
                log_debug("HTTP: " + std::to_string(kMaxHttpConnections) +
                          " connections open; closing the one idle longest, " + oldest->who());
                oldest->close();
            }
        }
        if (shared_->connections.size() >= kMaxHttpConnections) {
            // Every place is a request the backend is answering (each
            // bounded by kBackendTimeout): refuse, not queue.
            boost::system::error_code ignored;
            socket.non_blocking(true, ignored);
            socket.write_some(asio::buffer(kBusyResponse), ignored);
            socket.close(ignored);
        } else {
            std::make_shared<HttpConnection>(std::move(socket), shared_)->start();
        }
        accept_next();
    });
}

} // namespace cbd
