// The socket-path rule (see socket_path.hpp).
#include "common/socket_path.hpp"

#include <cstdlib>
#include <unistd.h>

namespace cbd {

std::string resolve_socket_path(const SocketPathInputs& in) {
    if (!in.flag.empty())
        return in.flag;
    if (!in.env_cbd_socket.empty())
        return in.env_cbd_socket;
    if (!in.is_root && !in.env_runtime_dir.empty())
        return in.env_runtime_dir + "/cbd/cbd.sock";
    return std::string(kSystemSocketPath);
}

std::string resolve_socket_path(std::string_view flag) {
    auto env = [](const char* name) {
        const char* value = std::getenv(name);
        return std::string(value ? value : "");
    };
    return resolve_socket_path(SocketPathInputs{std::string(flag), env("CBD_SOCKET"),
                                                env("XDG_RUNTIME_DIR"), geteuid() == 0});
}

} // namespace cbd
