// Who is on the other end of a connection: a plain value that the store, the
// dispatcher and the network all pass around (net/peer_credentials.hpp reads
// it off a socket).
#pragma once

#include <cstdint>
#include <sys/types.h>

namespace cbd {

struct Peer {
    uid_t uid = static_cast<uid_t>(-1);
    gid_t gid = static_cast<gid_t>(-1);
    pid_t pid = 0;
    // Which of the daemon's connections (numbered from 1 as they are
    // accepted); 0 for the daemon's own work and the HTTP listener. The
    // Redis backend takes turns between connections by it.
    std::uint64_t connection = 0;
};

} // namespace cbd
