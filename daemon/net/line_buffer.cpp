// LineBuffer (see line_buffer.hpp).
#include "daemon/net/line_buffer.hpp"

#include <algorithm>

namespace cbd {

namespace {
constexpr std::size_t kInitialBytes = 16 * 1024;
}

LineBuffer::LineBuffer(std::size_t max_line_bytes)
    : max_line_bytes_(max_line_bytes), data_(std::min(kInitialBytes, max_line_bytes + 1)) {}

std::size_t LineBuffer::write_space() {
    // Grow only when full, and never past one line plus its newline.
    if (used_ == data_.size() && data_.size() < max_line_bytes_ + 1)
        data_.resize(std::min(data_.size() * 2, max_line_bytes_ + 1));
    return data_.size() - used_;
}

} // namespace cbd
