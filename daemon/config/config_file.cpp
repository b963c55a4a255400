// The configuration file (see config_file.hpp).
#include "daemon/config/config_file.hpp"

#include "common/protocol.hpp"
#include "common/request.hpp"
#include "daemon/core/safe_file.hpp"

#include <nlohmann/json.hpp>
#include <set>

namespace cbd {

namespace {
// A config file is small; refuse anything that is clearly not one (4 MiB).
constexpr std::size_t kMaxConfigBytes = 4 * 1024 * 1024;
} // namespace

FileConfig parse_config(const std::string& text) {
    if (nesting_exceeds(text, 8))
        throw ConfigError("nesting deeper than 8 levels");
    nlohmann::json doc;
    try {
        doc = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
        // Say where: e.what() is "[json.exception.parse_error.101] parse
        // error at line L, column C: ...".
        const std::string what = e.what();
        const auto start = what.find("] ");
        throw ConfigError("not valid JSON: " +
                          (start == std::string::npos ? what : what.substr(start + 2)));
    }
    if (!doc.is_object())
        throw ConfigError("the top level must be a JSON object");

    FileConfig file;
    PolicyConfig& config = file.policy;
    for (auto it = doc.begin(); it != doc.end(); ++it) {
        const auto& k = it.key();
        if (k != "defaults" && k != "policies" && k != "writerGroup" && k != "adminGroup")
            throw ConfigError("unknown setting '" + k +
                              "' (expected defaults, policies, writerGroup, adminGroup)");
        if ((k == "writerGroup" || k == "adminGroup") &&
            (!it.value().is_string() || it.value().get<std::string>().empty()))
            throw ConfigError("\"" + k + "\" must be a group name or number, as a string");
    }
    file.writer_group = doc.value("writerGroup", "");
    file.admin_group = doc.value("adminGroup", "");
    if (auto d = doc.find("defaults"); d != doc.end()) {
        if (auto err = parse_policy_patch(*d, config.defaults))
            throw ConfigError("defaults: " + *err);
    }
    if (auto p = doc.find("policies"); p != doc.end()) {
        if (!p->is_array())
            throw ConfigError("\"policies\" must be an array");
        std::set<std::string> seen;
        for (std::size_t i = 0; i < p->size(); ++i) {
            const auto& rule = (*p)[i];
            const std::string where = "policies[" + std::to_string(i) + "]";
            if (!rule.is_object())
                throw ConfigError(where + " must be an object");
            auto prefix = rule.find("prefix");
            if (prefix == rule.end() || !prefix->is_string())
                throw ConfigError(where + " needs a string \"prefix\"");
            PolicyRule r;
            r.prefix = prefix->get<std::string>();
            if (auto problem = key_problem(r.prefix))
                throw ConfigError(where + ": prefix: " + std::string(*problem));
            if (!seen.insert(r.prefix).second)
                throw ConfigError(where + ": prefix '" + r.prefix + "' appears twice");
            if (auto err = parse_policy_patch(rule, r.patch, false, nullptr, "prefix"))
                throw ConfigError(where + ": " + *err);
            // Fields that hold only together, with the file's defaults
            // under the rule (flags and key overrides are checked apart).
            PolicyPatch layered = config.defaults;
            layered.merge(r.patch);
            if (auto err = patch_combination_problem(layered))
                throw ConfigError(where + ": " + *err);
            config.rules.push_back(std::move(r));
        }
    }
    return file;
}

FileConfig load_config(const std::string& path) {
    // An administrator's symlink to the file is normal: followed, and its
    // target must be a regular file. Neither a FIFO nor /dev/zero can stall
    // the loop or fill memory: the open does not wait, and the read stops
    // one byte past the limit.
    std::string text;
    if (auto problem =
            read_regular_file(path, kMaxConfigBytes, Symlinks::Follow, text, "configuration file"))
        throw ConfigError(*problem);
    try {
        return parse_config(text);
    } catch (const ConfigError& e) {
        throw ConfigError("configuration file " + path + ": " + e.what());
    }
}

} // namespace cbd
