// Who may open one more connection. Three limits, so that no read-level peer
// (or any one user) can take the daemon away from everyone else:
//   - the total (--max-connections);
//   - per uid (--max-connections-per-uid): one user's processes together,
//     except root and cbd's own uid, which are the host itself;
//   - the reserve (--reserved-connections): the last slots go only to write-
//     and admin-level peers, as PostgreSQL keeps its reserved_connections for
//     privileged roles. A reader holding every slot it can get still leaves
//     root's `cbctl ping` and a writer's `failure` a way in.
// Pure: the server counts, this decides.
#pragma once

#include "common/protocol.hpp"

#include <cstddef>
#include <string>
#include <sys/types.h>

namespace cbd {

inline constexpr std::size_t kDefaultMaxConnections = 1024;
inline constexpr std::size_t kDefaultMaxConnectionsPerUid = 256;

// The reserve when --reserved-connections is not given: 1/16 of the total,
// at least 1 (64 of the default 1024), and none when the total is 1.
std::size_t default_reserved_connections(std::size_t max_connections);

struct ConnectionLimits {
    std::size_t max_total = kDefaultMaxConnections;
    std::size_t per_uid = kDefaultMaxConnectionsPerUid; // 0 = no limit per uid
    std::size_t reserved = default_reserved_connections(kDefaultMaxConnections); // < max_total
    uid_t daemon_uid = 0; // exempt from the per-uid limit, as root is
};

enum class Admission {
    Admit,
    Full,         // every slot is taken
    UidFull,      // this uid holds its share
    ReservedOnly, // only the reserve is left, and the peer is read-level
};

struct OpenConnections {
    std::size_t total = 0;
    std::size_t by_this_uid = 0;
};

Admission admit(const ConnectionLimits& limits, const OpenConnections& open, uid_t uid,
                AccessLevel level);

// The message of the too_many_connections reply for a refusal: which limit,
// with the flag that sets it.
std::string refusal_message(const ConnectionLimits& limits, Admission why, uid_t uid);

} // namespace cbd
