// Logging to stderr. Under systemd (JOURNAL_STREAM names our stderr) each line
// carries a "<N>" priority prefix so journald files it at the right level;
// otherwise lines read "cbd: LEVEL: message".
#pragma once

#include <optional>
#include <string_view>

namespace cbd {

enum class LogLevel { Error = 3, Warn = 4, Info = 6, Debug = 7 };

std::optional<LogLevel> parse_log_level(std::string_view name);
void log_init(LogLevel threshold);
bool log_enabled(LogLevel level);
void log_message(LogLevel level, std::string_view message);

inline void log_error(std::string_view m) {
    log_message(LogLevel::Error, m);
}
inline void log_warn(std::string_view m) {
    log_message(LogLevel::Warn, m);
}
inline void log_info(std::string_view m) {
    log_message(LogLevel::Info, m);
}
inline void log_debug(std::string_view m) {
    log_message(LogLevel::Debug, m);
}

} // namespace cbd
