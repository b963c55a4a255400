// Logging (see log.hpp).
#include "daemon/core/log.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <sys/stat.h>

namespace cbd {

namespace {

LogLevel g_threshold = LogLevel::Info;
bool g_journal = false;

// systemd sets JOURNAL_STREAM to "device:inode" of the stream it connected to
// our stderr; only when they match is stderr really the journal.
bool stderr_is_journal() {
    const char* stream = std::getenv("JOURNAL_STREAM");
    if (stream == nullptr)
        return false;
    struct stat st {};
    if (fstat(2, &st) != 0)
        return false;
    unsigned long long dev = 0, ino = 0;
    if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2)
        return false;
    return dev == st.st_dev && ino == st.st_ino;
}

std::string_view level_name(LogLevel level) {
    switch (level) {
    case LogLevel::Error:
        return "error";
    case LogLevel::Warn:
        return "warning";
    case LogLevel::Info:
        return "info";
    case LogLevel::Debug:
        return "debug";
    }
    return "info";
}

} // namespace

std::optional<LogLevel> parse_log_level(std::string_view name) {
    if (name == "error")
        return LogLevel::Error;
    if (name == "warn" || name == "warning")
        return LogLevel::Warn;
    if (name == "info")
        return LogLevel::Info;
    if (name == "debug")
        return LogLevel::Debug;
    return std::nullopt;
}

void log_init(LogLevel threshold) {
    g_threshold = threshold;
    g_journal = stderr_is_journal();
}

bool log_enabled(LogLevel level) {
    return static_cast<int>(level) <= static_cast<int>(g_threshold);
}

void log_message(LogLevel level, std::string_view message) {
    if (!log_enabled(level))
        return;
    std::string line;
    if (g_journal) {
        line = "<" + std::to_string(static_cast<int>(level)) + ">";
    } else {
        line = "cbd: ";
        line += level_name(level);
        line += ": ";
    }
    line += message;
    line += '\n';
    // One write per line, so lines from a crash handler or another thread
    // cannot interleave mid-line.
    std::fwrite(line.data(), 1, line.size(), stderr);
    std::fflush(stderr);
}

} // namespace cbd
