// Access levels (see access.hpp).
#include "daemon/net/access.hpp"

#include <algorithm>

namespace cbd {

AccessLevel access_level_for(const Peer& peer, const std::vector<gid_t>& groups,
                             const AccessConfig& config, uid_t daemon_uid) {
    if (!config.restricted() || peer.uid == 0 || peer.uid == daemon_uid)
        return AccessLevel::Admin;
    auto member = [&](const std::optional<gid_t>& g) {
        return g && std::find(groups.begin(), groups.end(), *g) != groups.end();
    };
    if (member(config.admin_group))
        return AccessLevel::Admin;
    if (member(config.writer_group))
        return AccessLevel::Write;
    return AccessLevel::Read;
}

} // namespace cbd
