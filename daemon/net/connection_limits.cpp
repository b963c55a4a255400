// Connection admission (see connection_limits.hpp).
#include "daemon/net/connection_limits.hpp"

#include <algorithm>

namespace cbd {

std::size_t default_reserved_connections(std::size_t max_connections) {
    // Never all of them: with one connection in all, none is kept back.
    if (max_connections <= 1)
        return 0;
    return std::max<std::size_t>(1, max_connections / 16);
}

Admission admit(const ConnectionLimits& limits, const OpenConnections& open, uid_t uid,
                AccessLevel level) {
    if (open.total >= limits.max_total)
        return Admission::Full;
    const bool exempt_uid = uid == 0 || uid == limits.daemon_uid;
    if (!exempt_uid && limits.per_uid > 0 && open.by_this_uid >= limits.per_uid)
        return Admission::UidFull;
    if (level == AccessLevel::Read && open.total + limits.reserved >= limits.max_total)
        return Admission::ReservedOnly;
    return Admission::Admit;
}

std::string refusal_message(const ConnectionLimits& limits, Admission why, uid_t uid) {
    switch (why) {
    case Admission::Admit:
        break;
    case Admission::Full:
        return "cbd has as many connections as it allows (--max-connections " +
               std::to_string(limits.max_total) + "); try again later";
    case Admission::UidFull:
        return "uid " + std::to_string(uid) + " has as many connections as one user may hold " +
               "(--max-connections-per-uid " + std::to_string(limits.per_uid) +
               "); close some, or try again later";
    case Admission::ReservedOnly:
        return "the remaining connections are kept for write- and admin-level peers "
               "(--reserved-connections " +
               std::to_string(limits.reserved) + "); read-level peers may hold " +
               std::to_string(limits.max_total - limits.reserved) + " at once";
    }
    return {};
}

} // namespace cbd
