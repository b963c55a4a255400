// Peer credentials (see peer_credentials.hpp).
#include "daemon/net/peer_credentials.hpp"

#include "daemon/net/access.hpp"

#include <cerrno>
#include <sys/socket.h>
#include <unistd.h>

namespace cbd {

Peer peer_of(int fd) {
    Peer peer;
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
        peer.uid = cred.uid;
        peer.gid = cred.gid;
        peer.pid = cred.pid;
    }
    return peer;
}

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

PeerIdentity identify_peer(int fd, const AccessConfig& access) {
    PeerIdentity who;
    who.peer = peer_of(fd);
    who.level = access_level_for(who.peer, peer_groups(fd, who.peer), access, geteuid());
    return who;
}

} // namespace cbd
