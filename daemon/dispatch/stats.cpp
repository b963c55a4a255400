// The helpers of stats and its sections (see stats.hpp).
#include "daemon/dispatch/stats.hpp"

#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

namespace cbd {

nlohmann::json text_or_null(const std::string& text) {
    return text.empty() ? nlohmann::json(nullptr) : nlohmann::json(text);
}

std::uint64_t resident_memory_bytes() {
    std::ifstream statm("/proc/self/statm");
    std::uint64_t size = 0, resident = 0;
    if (!(statm >> size >> resident))
        return 0;
    return resident * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
}

} // namespace cbd
