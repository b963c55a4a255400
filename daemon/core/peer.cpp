// Peer credentials (see peer.hpp).
#include "daemon/core/peer.hpp"

#include <sys/socket.h>

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

} // namespace cbd
