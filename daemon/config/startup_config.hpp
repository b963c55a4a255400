// What the config file and the flags decide together (policy defaults,
// prefix rules, access groups), built by one function for both a start and
// `cbd --check-config`, so the check cannot accept what a start refuses.
#pragma once

#include "daemon/breaker/policy_set.hpp"
#include "daemon/config/access_config.hpp"
#include "daemon/config/daemon_config.hpp"

#include <iosfwd>

namespace cbd {

struct Settings {
    PolicyConfig policy;
    AccessConfig access;
};

// Built-in defaults, then the file (config.config_path), then the flags.
// Throws ConfigError saying what is wrong and where.
Settings load_settings(const DaemonConfig& config);

// `cbd --check-config`: loads the settings as a start would and prints the
// effective defaults, each prefix rule's effective policy and the access
// groups to `out`; or the first error to `err`. Opens no socket and no state
// file. Returns the exit status: 0 when the configuration is usable, else 1.
int check_config(const DaemonConfig& config, std::ostream& out, std::ostream& err);

} // namespace cbd
