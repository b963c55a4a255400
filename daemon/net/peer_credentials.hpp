// What a connection's socket says of its peer: SO_PEERCRED, SO_PEERGROUPS,
// and the access level they give (access.hpp decides it from them).
#pragma once

#include "common/protocol.hpp"
#include "daemon/config/access_config.hpp"
#include "daemon/core/peer.hpp"

#include <sys/types.h>
#include <vector>

namespace cbd {

// SO_PEERCRED of a connected Unix socket; unknown fields stay at their
// defaults when the kernel does not say.
Peer peer_of(int fd);

// The peer's supplementary groups (SO_PEERGROUPS), plus its primary group.
std::vector<gid_t> peer_groups(int fd, const Peer& peer);

// What a connection runs as, worked out once when it is accepted.
struct PeerIdentity {
    Peer peer;
    AccessLevel level = AccessLevel::Read;
};

// The peer's credentials and access level (SO_PEERCRED, its groups).
PeerIdentity identify_peer(int fd, const AccessConfig& access);

} // namespace cbd
