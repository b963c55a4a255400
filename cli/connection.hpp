// cbctl's side of the socket: a blocking Unix-socket connection whose every
// wait is bounded by a deadline. Failures throw ConnectionError, which cbctl
// turns into exit code 3 with a message naming the socket path.
#pragma once

#include <chrono>
#include <stdexcept>
#include <string>
#include <string_view>

namespace cbctl {

using Clock = std::chrono::steady_clock;

struct ConnectionError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

class Connection {
  public:
    static Connection open(const std::string& path, Clock::time_point deadline);

    Connection(Connection&& other) noexcept;
    Connection& operator=(Connection&&) = delete;
    ~Connection();

    void send_all(std::string_view data, Clock::time_point deadline);
    // The next line from the daemon, without its "\n".
    std::string read_line(Clock::time_point deadline);

    // Reads what is available now (after poll said so) into the line buffer;
    // false on EOF. For cbctl pipe, which multiplexes stdin and the socket.
    bool read_available();
    // Takes one complete line from the buffer, if there is one.
    bool take_line(std::string& line);
    // Writes as much of `data` as the socket takes now; returns bytes written.
    std::size_t write_some(std::string_view data);
    void shutdown_send();

    int fd() const { return fd_; }
    const std::string& path() const { return path_; }

  private:
    Connection(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
    void wait_for(short events, Clock::time_point deadline, std::string_view doing);

    int fd_;
    std::string path_;
    std::string in_;
};

} // namespace cbctl
