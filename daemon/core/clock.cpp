// FileClock (see clock.hpp).
#include "daemon/core/clock.hpp"

#include <charconv>
#include <fcntl.h>
#include <unistd.h>

namespace cbd {

FileClock::FileClock(std::string path) : path_(std::move(path)), last_(SystemClock().now_ms()) {}

std::int64_t FileClock::now_ms() const {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return last_;
    char buf[32];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    ::close(fd);
    if (n <= 0)
        return last_;
    std::size_t len = static_cast<std::size_t>(n);
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
        --len;
    std::int64_t value = 0;
    const auto [end, ec] = std::from_chars(buf, buf + len, value);
    if (ec == std::errc() && end == buf + len && value >= 0)
        last_ = value;
    return last_;
}

} // namespace cbd
