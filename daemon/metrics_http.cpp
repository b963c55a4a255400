// MetricsHttpServer (see metrics_http.hpp).
#include "daemon/metrics_http.hpp"

#include "daemon/listener.hpp"
#include "daemon/log.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <memory>

namespace cbd {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr std::size_t kMaxConnections = 16;
constexpr std::size_t kMaxRequestBytes = 8 * 1024;
constexpr auto kRequestTimeout = std::chrono::seconds(5);

template <typename Shared>
class HttpExchange : public std::enable_shared_from_this<HttpExchange<Shared>> {
  public:
    HttpExchange(tcp::socket socket, std::shared_ptr<Shared> shared)
        : stream_(std::move(socket)), shared_(std::move(shared)) {
        ++shared_->active;
    }
    ~HttpExchange() { --shared_->active; }

    void start() {
        parser_.header_limit(kMaxRequestBytes);
        parser_.body_limit(kMaxRequestBytes);
        stream_.expires_after(kRequestTimeout);
        http::async_read(stream_, buffer_, parser_,
                         [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                             self->on_read(ec);
                         });
    }

  private:
    void on_read(beast::error_code ec) {
        if (ec)
            return; // timeout, garbage, or the peer left: just close
        const auto& req = parser_.get();
        response_.version(req.version());
        response_.keep_alive(false);
        response_.set(http::field::server, "cbd");
        if (req.method() != http::verb::get && req.method() != http::verb::head) {
            response_.result(http::status::method_not_allowed);
            response_.set(http::field::allow, "GET, HEAD");
            response_.set(http::field::content_type, "text/plain");
            response_.body() = "only GET /metrics is served here\n";
        } else if (req.target() != "/metrics") {
            response_.result(http::status::not_found);
            response_.set(http::field::content_type, "text/plain");
            response_.body() = "only GET /metrics is served here\n";
        } else {
            response_.result(http::status::ok);
            response_.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
            if (req.method() == http::verb::get)
                response_.body() = shared_->render();
        }
        response_.prepare_payload();
        stream_.expires_after(kRequestTimeout);
        http::async_write(stream_, response_,
                          [self = this->shared_from_this()](beast::error_code, std::size_t) {
                              beast::error_code ignored;
                              self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
                          });
    }

    beast::tcp_stream stream_;
    beast::flat_buffer buffer_{kMaxRequestBytes};
    http::request_parser<http::string_body> parser_;
    http::response<http::string_body> response_;
    std::shared_ptr<Shared> shared_;
};

tcp::endpoint parse_endpoint(const std::string& listen) {
    const auto colon = listen.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == listen.size())
        throw StartupError("--metrics-listen '" + listen + "': expected ADDRESS:PORT, such as "
                           "127.0.0.1:9464");
    std::string host = listen.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    const std::string port = listen.substr(colon + 1);
    if (port.find_first_not_of("0123456789") != std::string::npos || port.size() > 5 ||
        std::stoul(port) > 65535)
        throw StartupError("--metrics-listen '" + listen + "': bad port");
    boost::system::error_code ec;
    auto address = asio::ip::make_address(host, ec);
    if (ec)
        throw StartupError("--metrics-listen '" + listen + "': '" + host +
                           "' is not an IP address");
    return {address, static_cast<unsigned short>(std::stoul(port))};
}

} // namespace

MetricsHttpServer::MetricsHttpServer(asio::io_context& io, const std::string& listen,
                                     Render render)
    : acceptor_(io), accept_backoff_(io),
      shared_(std::make_shared<Shared>(Shared{std::move(render), 0})) {
    const auto endpoint = parse_endpoint(listen);
    boost::system::error_code ec;
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec)
        acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec)
        acceptor_.bind(endpoint, ec);
    if (!ec)
        acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec)
        throw StartupError("cannot listen for metrics on " + listen + ": " + ec.message());
}

std::string MetricsHttpServer::local_endpoint() const {
    boost::system::error_code ec;
    auto ep = acceptor_.local_endpoint(ec);
    return ec ? "?" : ep.address().to_string() + ":" + std::to_string(ep.port());
}

void MetricsHttpServer::start() { accept_next(); }

void MetricsHttpServer::stop() {
    stopped_ = true;
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    accept_backoff_.cancel();
}

void MetricsHttpServer::accept_next() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
        if (stopped_ || ec == asio::error::operation_aborted)
            return;
        if (ec) {
            // Out of descriptors: back off rather than spin.
            log_warn("metrics accept failed: " + ec.message() + "; retrying in 100 ms");
            accept_backoff_.expires_after(std::chrono::milliseconds(100));
            accept_backoff_.async_wait([this](boost::system::error_code wait_ec) {
                if (!wait_ec && !stopped_)
                    accept_next();
            });
            return;
        }
        if (shared_->active >= kMaxConnections) {
            boost::system::error_code ignored;
            socket.close(ignored); // scrapers retry; the daemon comes first
        } else {
            std::make_shared<HttpExchange<Shared>>(std::move(socket), shared_)->start();
        }
        accept_next();
    });
}

} // namespace cbd
