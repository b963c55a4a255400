// Access levels (see access.hpp).
#include "daemon/net/access.hpp"

#include <algorithm>
#include <cerrno>
#include <grp.h>
#include <sys/socket.h>

namespace cbd {

std::vector<gid_t> peer_groups(int fd, const Peer& peer) {
    std::vector<gid_t> groups(64);
    for (int attempt = 0; attempt < 4; ++attempt) {
        socklen_t len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) == 0) {
            groups.resize(len / sizeof(gid_t));
            break;
        }
        if (errno != ERANGE) {
            groups.clear(); // unknown: only the primary group counts
            break;
        }
        groups.resize(len / sizeof(gid_t) + 16); // the kernel said how many
    }
    groups.push_back(peer.gid);
    return groups;
}

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

std::optional<gid_t> resolve_group(const std::string& name_or_gid, std::string& error) {
    if (name_or_gid.empty()) {
        error = "empty group name";
        return std::nullopt;
    }
    if (name_or_gid.find_first_not_of("0123456789") == std::string::npos &&
        name_or_gid.size() <= 9)
        return static_cast<gid_t>(std::stoul(name_or_gid));
    group entry{};
    group* found = nullptr;
    std::vector<char> buf(16 * 1024);
    if (getgrnam_r(name_or_gid.c_str(), &entry, buf.data(), buf.size(), &found) != 0 || !found) {
        error = "unknown group '" + name_or_gid + "'";
        return std::nullopt;
    }
    return found->gr_gid;
}

} // namespace cbd
