// Access groups (see access_config.hpp).
#include "daemon/config/access_config.hpp"

#include <grp.h>
#include <vector>

namespace cbd {

std::optional<gid_t> resolve_group(const std::string& name_or_gid, std::string& error) {
    if (name_or_gid.empty()) {
        error = "empty group name";
        return std::nullopt;
    }
    if (name_or_gid.find_first_not_of("0123456789") == std::string::npos && name_or_gid.size() <= 9)
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
