// StorageStats (see storage_stats.hpp).
#include "daemon/backends/persist/storage_stats.hpp"

#include "daemon/dispatch/metrics.hpp"

#include <nlohmann/json.hpp>

namespace cbd {

void StorageStats::write_json(nlohmann::json& object) const {
    object["mode"] = mode;
    object["path"] = path;
    object["healthy"] = healthy;
    object["commits"] = commits;
    object["failures"] = failures;
    object["written"] = written;
    object["undone"] = undone;
    object["pending"] = pending;
    object["lastCommitMs"] = last_commit_ms;
    object["lastError"] = text_or_null(last_error);
}

void StorageStats::write_metrics(Exposition& m) const {
    m.family("cbd_storage_healthy", "gauge",
             "1 when the last commit to the state file succeeded, else 0.");
    m.sample("cbd_storage_healthy", metric_label("mode", mode), healthy ? 1 : 0);
    m.family("cbd_storage_commits_total", "counter", "Transactions committed to the state file.");
    m.sample("cbd_storage_commits_total", "", commits);
    m.family("cbd_storage_failures_total", "counter", "Transactions that failed.");
    m.sample("cbd_storage_failures_total", "", failures);
    m.family("cbd_storage_written_total", "counter", "Circuit rows written.");
    m.sample("cbd_storage_written_total", "", written);
    m.family("cbd_storage_undone_total", "counter",
             "Durable mode: changes undone because their commit failed.");
    m.sample("cbd_storage_undone_total", "", undone);
    m.family("cbd_storage_pending", "gauge", "Batch mode: keys changed and not yet written.");
    m.sample("cbd_storage_pending", "", pending);
}

} // namespace cbd
