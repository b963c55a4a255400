// What cbd tells systemd: readiness, stopping, watchdog pings, status. Each
// call does nothing when NOTIFY_SOCKET is unset (not under systemd).
#pragma once

#include <chrono>
#include <optional>
#include <string_view>

namespace cbd {

void notify_ready(std::string_view status);
void notify_stopping();
void notify_watchdog();

// Half the interval systemd expects pings at (WATCHDOG_USEC), when enabled.
std::optional<std::chrono::microseconds> watchdog_ping_interval();

} // namespace cbd
