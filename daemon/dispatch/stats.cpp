// The helpers of stats sections (see stats.hpp).
#include "daemon/dispatch/stats.hpp"

#include <nlohmann/json.hpp>

namespace cbd {

nlohmann::json text_or_null(const std::string& text) {
    return text.empty() ? nlohmann::json(nullptr) : nlohmann::json(text);
}

} // namespace cbd
