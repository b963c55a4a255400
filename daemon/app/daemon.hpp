// The daemon as a whole: configuration in, a serving event loop out. main.cpp
// parses flags into DaemonConfig and calls run_daemon(); tests can do the same.
#pragma once

#include "daemon/config/daemon_config.hpp"

namespace cbd {

// Serves until SIGTERM or SIGINT. Returns the process exit status: 0 after a
// clean shutdown, 1 when cbd could not start (the reason is logged).
int run_daemon(const DaemonConfig& config);

} // namespace cbd
