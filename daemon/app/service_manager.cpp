// Service-manager notifications (see service_manager.hpp).
#include "daemon/app/service_manager.hpp"

#include <string>
#include <systemd/sd-daemon.h>

namespace cbd {

void notify_ready(std::string_view status) {
    const std::string message = "READY=1\nSTATUS=" + std::string(status);
    sd_notify(0, message.c_str());
}

void notify_stopping() {
    sd_notify(0, "STOPPING=1\nSTATUS=Shutting down");
}

void notify_watchdog() {
    sd_notify(0, "WATCHDOG=1");
}

std::optional<std::chrono::microseconds> watchdog_ping_interval() {
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
        return std::nullopt;
    return std::chrono::microseconds(usec / 2);
}

} // namespace cbd
