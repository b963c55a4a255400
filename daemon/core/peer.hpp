// Who is on the other end of a connection: a plain value that the store, the
// dispatcher and the network all pass around (net/peer_credentials.hpp reads
// it off a socket).
#pragma once

#include <sys/types.h>

namespace cbd {

struct Peer {
    uid_t uid = static_cast<uid_t>(-1);
    gid_t gid = static_cast<gid_t>(-1);
    pid_t pid = 0;
};

} // namespace cbd
