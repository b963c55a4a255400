// Which groups may write and administer (--writer-group, --admin-group, or
// the config file's "access"); the net layer turns them into a connection's
// access level (see net/access.hpp).
#pragma once

#include <optional>
#include <string>
#include <sys/types.h>

namespace cbd {

struct AccessConfig {
    std::optional<gid_t> writer_group;
    std::optional<gid_t> admin_group;

    bool restricted() const { return writer_group || admin_group; }
};

// A group given by name or number; nullopt with `error` set when unknown.
std::optional<gid_t> resolve_group(const std::string& name_or_gid, std::string& error);

} // namespace cbd
