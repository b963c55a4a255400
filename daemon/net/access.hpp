// Who may do what: each connection gets an access level from its peer
// credentials (SO_PEERCRED, SO_PEERGROUPS). root and cbd's own uid are always
// admin; members of the admin group are admin, of the writer group write;
// everyone else read. With neither group configured, everyone who can connect
// is admin, and the socket's mode and group are the only guard.
#pragma once

#include "common/protocol.hpp"
#include "daemon/core/peer.hpp"

#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace cbd {

struct AccessConfig {
    std::optional<gid_t> writer_group;
    std::optional<gid_t> admin_group;

    bool restricted() const { return writer_group || admin_group; }
};

// The peer's supplementary groups (SO_PEERGROUPS), plus its primary group.
std::vector<gid_t> peer_groups(int fd, const Peer& peer);

AccessLevel access_level_for(const Peer& peer, const std::vector<gid_t>& groups,
                             const AccessConfig& config, uid_t daemon_uid);

// A group given by name or number; nullopt with `error` set when unknown.
std::optional<gid_t> resolve_group(const std::string& name_or_gid, std::string& error);

} // namespace cbd
