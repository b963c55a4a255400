// Durations on the command line: "300ms", "5s", "1.5s", "2m", "1h"; a bare
// number is seconds, as timeout(1) reads it.
#pragma once

#include <chrono>
#include <optional>
#include <string_view>

namespace cbd {

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

} // namespace cbd
