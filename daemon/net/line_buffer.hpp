// A connection's input, split into lines: pure, no I/O, so the fuzzer drives
// the very splitter the server uses. The buffer never holds more than
// max_line_bytes + 1 bytes: a line longer than the limit is reported, never
// accumulated.
#pragma once

#include <cstddef>
#include <cstring>
#include <string_view>
#include <vector>

namespace cbd {

class LineBuffer {
  public:
    explicit LineBuffer(std::size_t max_line_bytes);

    // Where the next read may write; never empty unless a too-long line is
    // pending (drain() reports it first).
    char* write_pos() { return data_.data() + used_; }
    std::size_t write_space();
    void commit(std::size_t n) { used_ += n; }

    enum class Drained { Ok, Paused, LineTooLong };

    // Calls `on_line(std::string_view)` (the line without its "\n") for each
    // complete line, in order, until it returns false (Paused: the lines not
    // yet handed out stay for the next drain()). Keeps an unfinished line for
    // the next read, or discards it and answers LineTooLong when it passes
    // the limit.
    template <typename OnLine> Drained drain(OnLine&& on_line) {
        std::size_t start = 0;
        bool paused = false;
        while (start < used_) {
            const char* begin = data_.data() + start;
            const auto* nl = static_cast<const char*>(std::memchr(begin, '\n', used_ - start));
            if (nl == nullptr)
                break;
            const bool go_on =
                on_line(std::string_view(begin, static_cast<std::size_t>(nl - begin)));
            start = static_cast<std::size_t>(nl - data_.data()) + 1;
            if (!go_on) {
                paused = true;
                break;
            }
        }
        if (start > 0) {
            std::memmove(data_.data(), data_.data() + start, used_ - start);
            used_ -= start;
        }
        if (paused)
            return Drained::Paused;
        if (used_ > max_line_bytes_) {
            used_ = 0;
            return Drained::LineTooLong;
        }
        return Drained::Ok;
    }

    // Whether a complete line waits (after a pause).
    bool has_line() const { return used_ > 0 && std::memchr(data_.data(), '\n', used_) != nullptr; }

    std::size_t max_line_bytes() const { return max_line_bytes_; }
    std::size_t buffered() const { return used_; }

  private:
    std::size_t max_line_bytes_;
    std::vector<char> data_;
    std::size_t used_ = 0;
};

} // namespace cbd
