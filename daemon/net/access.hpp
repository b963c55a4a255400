// Who may do what: each connection gets an access level from its peer
// credentials (SO_PEERCRED, SO_PEERGROUPS; see peer_credentials.hpp). root and cbd's own uid are
// always admin; members of the admin group are admin, of the writer group write; everyone else
// read. With neither group configured, everyone who can connect is admin, and the socket's mode and
// group are the only guard.
#pragma once

#include "common/protocol.hpp"
#include "daemon/config/access_config.hpp"
#include "daemon/core/peer.hpp"

#include <sys/types.h>
#include <vector>

namespace cbd {

AccessLevel access_level_for(const Peer& peer, const std::vector<gid_t>& groups,
                             const AccessConfig& config, uid_t daemon_uid);

} // namespace cbd
