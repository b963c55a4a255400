// How the state file is doing: Persistence counts, and the counts describe
// themselves as the `storage` section of `stats` and the cbd_storage_*
// metrics.
#pragma once

#include "daemon/dispatch/stats.hpp"

#include <cstdint>
#include <string>

namespace cbd {

struct StorageStats final : StatsSection {
    std::string mode; // "always", "batch" or "off" (--sync)
    std::string path;
    bool healthy = true;             // the last commit succeeded
    std::uint64_t commits = 0;       // transactions committed
    std::uint64_t failures = 0;      // transactions that failed
    std::uint64_t written = 0;       // circuit rows written by them
    std::uint64_t undone = 0;        // durable mode: changes undone by failed commits
    std::uint64_t pending = 0;       // keys changed and not yet committed (as of the last tick)
    std::int64_t last_commit_ms = 0; // epoch ms of the last successful commit
    std::string last_error;          // of the last failure, kept after recovery

    void write_json(nlohmann::json& object) const override;
    void write_metrics(Exposition& metrics) const override;
};

} // namespace cbd
