// The configuration file (--config, e.g. /etc/cbd/cbd.json):
//   {"defaults": {"failureThreshold": 5, ...},
//    "policies": [{"prefix": "payments/", "failureThreshold": 3}, ...],
//    "writerGroup": "cbd-writers", "adminGroup": "cbd-admins"}
// Read at start-up and on SIGHUP; a file with any error is refused whole.
#pragma once

#include "daemon/breaker/policy_set.hpp"

#include <stdexcept>
#include <string>

namespace cbd {

struct ConfigError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct FileConfig {
    PolicyConfig policy;
    std::string writer_group; // a name or gid; empty when not set
    std::string admin_group;
};

// Parses the file's text; throws ConfigError saying what is wrong and where.
FileConfig parse_config(const std::string& text);

// Reads and parses `path`; throws ConfigError naming the file.
FileConfig load_config(const std::string& path);

} // namespace cbd
