// SystemClock and FileClock (see clock.hpp).
#include "daemon/core/clock.hpp"

#include <charconv>
#include <cstdlib>
#include <ctime>
#include <fcntl.h>
#include <unistd.h>

namespace cbd {

namespace {

constexpr std::int64_t kMaxSafeTime = (std::int64_t{1} << 53) - 1;
constexpr std::int64_t kNsPerMs = 1'000'000;

std::int64_t read_ns(clockid_t id) {
    timespec ts{};
    ::clock_gettime(id, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// The wall clock minus the monotonic one, read back to back.
std::int64_t wall_minus_mono_ns() {
    const std::int64_t mono = read_ns(CLOCK_MONOTONIC);
    return read_ns(CLOCK_REALTIME) - mono;
}

// Floor division, so that times before a step round the same way after it.
std::int64_t floor_div(std::int64_t a, std::int64_t b) {
    return a / b - ((a % b != 0) && ((a < 0) != (b < 0)) ? 1 : 0);
}

} // namespace

SystemClock::SystemClock() : base_ns_(wall_minus_mono_ns()), wall_minus_mono_ns_(base_ns_) {}

std::int64_t SystemClock::now_ms() const {
    return floor_div(read_ns(CLOCK_MONOTONIC) + base_ns_, kNsPerMs);
}

std::int64_t SystemClock::wall_offset_ms() const {
    const std::int64_t seen = wall_minus_mono_ns();
    // The two reads are nanoseconds apart; only a change of a millisecond
    // or more is a step of the wall clock (or a leap second).
    if (std::llabs(seen - wall_minus_mono_ns_) >= kNsPerMs)
        wall_minus_mono_ns_ = seen;
    // Whole milliseconds, rounded to the nearest: a step is a whole number
    // of them (or close to it), and times shown must not move by one now
    // and then.
    return floor_div(wall_minus_mono_ns_ - base_ns_ + kNsPerMs / 2, kNsPerMs);
}

bool parse_file_clock(std::string_view text, FileClockReading& out) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
        text.remove_suffix(1);
    std::int64_t values[2] = {0, 0};
    std::size_t count = 0;
    const char* p = text.data();
    const char* end = text.data() + text.size();
    while (p < end) {
        if (count == 2)
            return false;
        if (count == 1) {
            if (*p != ' ')
                return false;
            ++p;
        }
        std::int64_t value = 0;
        const auto [next, ec] = std::from_chars(p, end, value);
        if (ec != std::errc() || next == p || value < 0 || value > kMaxSafeTime)
            return false;
        values[count++] = value;
        p = next;
    }
    if (count == 0)
        return false;
    out = FileClockReading{values[0], count == 2 ? values[1] : values[0]};
    return true;
}

FileClock::FileClock(std::string path) : path_(std::move(path)) {
    const std::int64_t now = SystemClock().now_ms();
    wall_ = now;
    mono_ = now;
}

void FileClock::read() const {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return;
    char buf[64];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    ::close(fd);
    if (n <= 0 || static_cast<std::size_t>(n) == sizeof buf)
        return;
    FileClockReading reading{};
    if (parse_file_clock(std::string_view(buf, static_cast<std::size_t>(n)), reading)) {
        wall_ = reading.wall;
        mono_ = reading.mono;
    }
}

std::int64_t FileClock::now_ms() const {
    read();
    return mono_;
}

std::int64_t FileClock::wall_offset_ms() const {
    read();
    return wall_ - mono_;
}

} // namespace cbd
