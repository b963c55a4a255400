// The optional HTTP endpoint for Prometheus (--metrics-listen ADDR:PORT): it
// answers GET /metrics with the same text as `cbctl metrics`, 404 for any
// other path, 405 for any other method, and serves nothing else. One request
// per connection, small bounded requests, a read timeout, a connection cap:
// it must never be a way to hurt the daemon.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <memory>
#include <functional>
#include <string>

namespace cbd {

class MetricsHttpServer {
  public:
    using Render = std::function<std::string()>;

    // Throws StartupError when `listen` is not ADDR:PORT or cannot be bound.
    MetricsHttpServer(boost::asio::io_context& io, const std::string& listen, Render render);

    void start();
    void stop();
    std::string local_endpoint() const;

  private:
    void accept_next();

    // Shared with in-flight exchanges, which may outlive the server when the
    // loop is torn down with work pending.
    struct Shared {
        Render render;
        std::size_t active = 0;
    };

    boost::asio::ip::tcp::acceptor acceptor_;
    boost::asio::steady_timer accept_backoff_;
    std::shared_ptr<Shared> shared_;
    bool stopped_ = false;
};

} // namespace cbd
