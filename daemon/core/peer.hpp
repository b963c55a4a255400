// Who is on the other end of a connection, from the socket's credentials.
#pragma once

#include <sys/types.h>

namespace cbd {

struct Peer {
    uid_t uid = static_cast<uid_t>(-1);
    gid_t gid = static_cast<gid_t>(-1);
    pid_t pid = 0;
};

// SO_PEERCRED of a connected Unix socket; unknown fields stay at their
// defaults when the kernel does not say.
Peer peer_of(int fd);

} // namespace cbd
