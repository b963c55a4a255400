// Where cbd listens and cbctl connects: one rule for both programs.
#pragma once

#include <string>
#include <string_view>

namespace cbd {

struct SocketPathInputs {
    std::string flag;            // --socket, empty when not given
    std::string env_cbd_socket;  // $CBD_SOCKET, empty when unset
    std::string env_runtime_dir; // $XDG_RUNTIME_DIR, empty when unset
    bool is_root = false;
};

// --socket, else $CBD_SOCKET, else $XDG_RUNTIME_DIR/cbd/cbd.sock for a
// non-root user whose XDG_RUNTIME_DIR is set, else /run/cbd/cbd.sock.
std::string resolve_socket_path(const SocketPathInputs& in);

// The same, reading the environment and effective uid of this process.
std::string resolve_socket_path(std::string_view flag);

inline constexpr std::string_view kSystemSocketPath = "/run/cbd/cbd.sock";

} // namespace cbd
