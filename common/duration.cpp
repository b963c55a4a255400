// parse_duration (see duration.hpp).
#include "common/duration.hpp"

#include <cmath>
#include <string>

namespace cbd {

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
    std::size_t digits_end = 0;
    while (digits_end < text.size() &&
           (std::isdigit(static_cast<unsigned char>(text[digits_end])) || text[digits_end] == '.'))
        ++digits_end;
    if (digits_end == 0 || digits_end > 18)
        return std::nullopt;
    const std::string number(text.substr(0, digits_end));
    if (number.find('.') != number.rfind('.') || number.front() == '.' || number.back() == '.')
        return std::nullopt;
    const double value = std::stod(number);
    const std::string_view unit = text.substr(digits_end);
    double ms;
    if (unit == "ms")
        ms = value;
    else if (unit == "s" || unit.empty())
        ms = value * 1e3;
    else if (unit == "m")
        ms = value * 60e3;
    else if (unit == "h")
        ms = value * 3600e3;
    else
        return std::nullopt;
    if (ms < 1 || ms > 366.0 * 24 * 3600e3)
        return std::nullopt;
    return std::chrono::milliseconds(static_cast<long long>(std::llround(ms)));
}

} // namespace cbd
