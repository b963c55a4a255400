// cbctl's exit codes: part of its interface for shell scripts (README, --help).
#pragma once

namespace cbctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitDaemonError = 1; // cbd answered with an error
inline constexpr int kExitUsage = 2;       // bad command line
inline constexpr int kExitUnreachable = 3; // cannot connect, connection lost, timed out

} // namespace cbctl
