// HttpServer (see http_server.hpp): the accept loop, one HttpExchange per
// request, and HttpEventStream for /api/events.
#include "daemon/http/http_server.hpp"

#include "common/reply.hpp"
#include "daemon/core/log.hpp"
#include "daemon/core/startup_error.hpp"
#include "daemon/http/http_dashboard.hpp"

#include <array>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <memory>

namespace cbd {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Shared = HttpServer::Shared;

namespace {

// Requests being read or answered at once (event streams have their own cap).
constexpr std::size_t kMaxExchanges = 16;
// A request is a GET with no body: its headers fit in this.
constexpr std::size_t kMaxRequestBytes = 8 * 1024;
// How long a client has to send its request, and to take the answer; also
// how long an answer from the backend (Redis) is waited for.
constexpr auto kRequestTimeout = std::chrono::seconds(5);
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

namespace {

// One request and its answer, then the connection closes.
class HttpExchange : public std::enable_shared_from_this<HttpExchange> {
  public:
    HttpExchange(tcp::socket socket, std::shared_ptr<Shared> shared)
        : stream_(std::move(socket)), shared_(std::move(shared)),
          backend_deadline_(stream_.get_executor()) {
        ++shared_->exchanges;
    }
    ~HttpExchange() {
        if (replies_)
            replies_->on_front_ready = nullptr;
        --shared_->exchanges;
    }

    void start() {
        parser_.header_limit(kMaxRequestBytes);
        parser_.body_limit(kMaxRequestBytes);
        stream_.expires_after(kRequestTimeout);
        http::async_read(
            stream_, buffer_, parser_,
            [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
    }

  private:
    void on_read(beast::error_code ec) {
        if (ec)
            return; // timeout, garbage, or the peer left: just close
        const auto& req = parser_.get();
        head_only_ = req.method() == http::verb::head;
        if (req.method() != http::verb::get && !head_only_) {
            response_.set(http::field::allow, "GET, HEAD");
            respond(http::status::method_not_allowed, "text/plain",
                    "this listener is read-only: only GET and HEAD are served\n");
            return;
        }
        const auto host = req[http::field::host];
        if (!http_host_allowed({host.data(), host.size()}, shared_->options.allow_remote)) {
            respond(http::status::misdirected_request, "text/plain",
                    "the Host header must be an IP address or localhost (cbd --http-allow-remote "
                    "serves any)\n");
            return;
        }
        std::string error;
        const auto target = parse_http_target({req.target().data(), req.target().size()}, error);
        if (!target) {
            respond(req.target().size() > kMaxHttpTargetBytes ? http::status::uri_too_long
                                                              : http::status::bad_request,
                    "text/plain", error + "\n");
            return;
        }
        switch (target->route) {
        case HttpRoute::Dashboard:
            // The page's script and style are inline, and it talks only to
            // this origin: nothing else may load.
            response_.set("Content-Security-Policy",
                          "default-src 'none'; script-src 'unsafe-inline'; style-src "
                          "'unsafe-inline'; connect-src 'self'; img-src data:; "
                          "frame-ancestors 'none'");
            response_.set("Referrer-Policy", "no-referrer");
            respond(http::status::ok, "text/html; charset=utf-8", std::string(dashboard_html()));
            return;
        case HttpRoute::Metrics:
            respond(http::status::ok, "text/plain; version=0.0.4; charset=utf-8",
                    head_only_ ? std::string()
                               : shared_->dispatcher.metrics_text(metrics_per_circuit(*target)));
            return;
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
        respond(http::status::not_found, "text/plain",
                "not found; served here: / /metrics /api/circuits /api/policy /api/events\n");
    }

    void run_api(const HttpTarget& target) {
        std::string error;
        const auto line = api_request_line(target, error);
        if (!line) {
            std::string body;
            append_error_reply(body, {}, ErrorCode::InvalidRequest, error);
            respond(http::status::bad_request, "application/json", std::move(body));
            return;
        }
        // A read-level peer: the dispatcher refuses anything that writes, so
        // this door cannot change state whatever line reaches it.
        replies_ = std::make_shared<ReplyQueue>();
        RequestContext ctx;
        ctx.level = AccessLevel::Read;
        ctx.replies = replies_;
        // An answer that comes later (Redis) fills the slot inside the
        // backend's call stack: answer from the loop instead.
        replies_->on_front_ready = [weak = weak_from_this(), executor = stream_.get_executor()] {
            asio::post(executor, [weak] {
                if (auto self = weak.lock())
                    self->answer_api();
            });
        };
        shared_->dispatcher.handle_line(*line, ctx);
        answer_api();
        if (answered_)
            return;
        // Waiting for the backend: this timer keeps the exchange alive, and
        // bounds the wait should the backend's own timeout not answer.
        backend_deadline_.expires_after(kRequestTimeout);
        backend_deadline_.async_wait(
            [self = shared_from_this()](const boost::system::error_code& ec) {
                if (!ec && !self->answered_)
                    self->respond(http::status::gateway_timeout, "text/plain",
                                  "the backend did not answer in time\n");
            });
    }

    // Answers once the reply is whole: the dispatcher may leave an empty
    // ready slot in front of the one the backend fills later.
    void answer_api() {
        if (answered_)
            return;
        replies_->take_ready(api_reply_);
        if (replies_->waiting() > 0)
            return; // on_front_ready comes back here
        backend_deadline_.cancel();
        const auto status = static_cast<http::status>(http_status_for_reply(api_reply_));
        respond(status, "application/json", std::move(api_reply_));
    }

    void open_event_stream(const HttpTarget& target) {
        if (head_only_) {
            respond(http::status::ok, "text/event-stream", "");
            return;
        }
        if (shared_->stopped) {
            respond(http::status::service_unavailable, "text/plain", "shutting down\n");
            return;
        }
        if (shared_->streams.size() >= shared_->options.max_event_clients) {
            log_debug("refused an event stream: " +
                      std::to_string(shared_->options.max_event_clients) + " already open");
            response_.set(http::field::retry_after, "5");
            respond(http::status::service_unavailable, "text/plain",
                    "too many event streams open (cbd --http-max-event-clients)\n");
            return;
        }
        answered_ = true;
        std::make_shared<HttpEventStream>(stream_.release_socket(), shared_, event_filter(target))
            ->start();
    }

    void respond(http::status status, std::string_view content_type, std::string body) {
        answered_ = true;
        response_.version(parser_.get().version());
        response_.result(status);
        response_.keep_alive(false);
        response_.set(http::field::server, "cbd");
        response_.set(http::field::content_type,
                      beast::string_view(content_type.data(), content_type.size()));
        response_.set(http::field::cache_control, "no-store");
        response_.set("X-Content-Type-Options", "nosniff");
        response_.body() = std::move(body);
        response_.prepare_payload();
        if (head_only_)
            response_.body().clear(); // the length stays that of the GET
        stream_.expires_after(kRequestTimeout);
        http::async_write(stream_, response_,
                          [self = shared_from_this()](beast::error_code, std::size_t) {
                              beast::error_code ignored;
                              self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
                          });
    }

    beast::tcp_stream stream_;
    beast::flat_buffer buffer_{kMaxRequestBytes};
    http::request_parser<http::empty_body> parser_;
    http::response<http::string_body> response_;
    std::shared_ptr<Shared> shared_;
    std::shared_ptr<ReplyQueue> replies_; // an /api request's reply
    std::string api_reply_;               // taken from replies_ so far
    asio::steady_timer backend_deadline_;
    bool head_only_ = false;
    bool answered_ = false;
};

} // namespace

HttpServer::HttpServer(asio::io_context& io, const HttpServerOptions& options,
                       Dispatcher& dispatcher, EventHub& events, DaemonStats& stats)
    : acceptor_(io), accept_backoff_(io),
      shared_(std::make_shared<Shared>(Shared{dispatcher, events, stats, options, 0, {}, false})) {
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
    // close() edits the set: iterate a copy.
    const std::vector<HttpEventStream*> streams(shared_->streams.begin(), shared_->streams.end());
    for (auto* s : streams)
        s->close();
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
        if (shared_->exchanges >= kMaxExchanges) {
            boost::system::error_code ignored;
            socket.close(ignored); // browsers and scrapers retry; the daemon comes first
        } else {
            std::make_shared<HttpExchange>(std::move(socket), shared_)->start();
        }
        accept_next();
    });
}

} // namespace cbd
