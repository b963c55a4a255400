// Names of the configuration's enumerations (see daemon_config.hpp).
#include "daemon/config/daemon_config.hpp"

namespace cbd {

std::string_view sync_mode_name(SyncMode mode) {
    switch (mode) {
    case SyncMode::Always:
        return "always";
    case SyncMode::Batch:
        return "batch";
    case SyncMode::Off:
        return "off";
    }
    return "batch";
}

std::optional<SyncMode> parse_sync_mode(std::string_view name) {
    for (auto mode : {SyncMode::Always, SyncMode::Batch, SyncMode::Off})
        if (sync_mode_name(mode) == name)
            return mode;
    return std::nullopt;
}

} // namespace cbd
