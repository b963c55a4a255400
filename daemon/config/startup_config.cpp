// load_settings and `cbd --check-config` (see startup_config.hpp).
#include "daemon/config/startup_config.hpp"

#include "common/policy.hpp"
#include "common/reply.hpp"
#include "daemon/breaker/policy_digest.hpp"
#include "daemon/config/config_file.hpp"

#include <nlohmann/json.hpp>
#include <ostream>

namespace cbd {

Settings load_settings(const DaemonConfig& config) {
    Settings settings;
    FileConfig file;
    if (!config.config_path.empty())
        file = load_config(config.config_path);
    settings.policy = std::move(file.policy);
    settings.policy.defaults.merge(config.flag_defaults);
    // Each layer was checked alone; the built-in defaults, the file's, the
    // flags and a prefix rule must also make a usable policy together (a
    // windowSize of 20000 is fine for a time window, not for the count
    // window the built-in windowType gives it).
    PolicySet layered;
    layered.set_config(settings.policy);
    if (auto problem = policy_combination_problem(layered.resolve_with("", nullptr).policy))
        throw ConfigError("the defaults (built in, file and flags together): " + *problem);
    for (const PolicyRule& rule : settings.policy.rules)
        if (auto problem =
                policy_combination_problem(layered.resolve_with(rule.prefix, nullptr).policy))
            throw ConfigError("the prefix rule for \"" + rule.prefix +
                              "\" over the defaults: " + *problem);

    auto group = [](const std::string& flag, const std::string& from_file,
                    const char* what) -> std::optional<gid_t> {
        const std::string& name = flag.empty() ? from_file : flag;
        if (name.empty())
            return std::nullopt;
        std::string error;
        auto gid = resolve_group(name, error);
        if (!gid)
            throw ConfigError(std::string(what) + ": " + error);
        return gid;
    };
    settings.access.writer_group = group(config.writer_group, file.writer_group, "writer group");
    settings.access.admin_group = group(config.admin_group, file.admin_group, "admin group");
    return settings;
}

namespace {

// A JSON string literal, so a prefix holding quotes or control bytes prints
// as one unambiguous token.
std::string quoted(const std::string& text) {
    return cbd::json_string(text);
}

std::string group_text(const std::optional<gid_t>& gid) {
    return gid ? "gid " + std::to_string(*gid) : std::string("none");
}

} // namespace

int check_config(const DaemonConfig& config, std::ostream& out, std::ostream& err) {
    Settings settings;
    try {
        settings = load_settings(config);
    } catch (const ConfigError& e) {
        err << "cbd: configuration refused: " << e.what() << "\n";
        return 1;
    }
    PolicySet policies;
    policies.set_config(settings.policy);
    out << "config file: " << (config.config_path.empty() ? "none" : config.config_path) << "\n";
    // Resolving the empty key with no rule loaded gives the defaults alone,
    // with the probe lease derived exactly as the daemon derives it.
    PolicySet defaults_only;
    defaults_only.set_config(PolicyConfig{settings.policy.defaults, {}});
    out << "defaults: " << policy_json(defaults_only.effective("")) << "\n";
    out << "prefix rules: " << settings.policy.rules.size() << "\n";
    // A rule's own prefix is the longest rule that matches it, so resolving
    // the prefix as a key shows what that rule's circuits get.
    for (const auto& rule : settings.policy.rules)
        out << "  " << quoted(rule.prefix) << ": " << policy_json(policies.effective(rule.prefix))
            << "\n";
    // What a cbd on Redis publishes for the other hosts to compare: equal
    // digests on two hosts mean they resolve every key alike.
    out << "policy digest: " << policy_digest(settings.policy) << "\n";
    out << "access: writer group " << group_text(settings.access.writer_group) << ", admin group "
        << group_text(settings.access.admin_group)
        << (settings.access.restricted() ? "" : " (everyone who can connect is admin)") << "\n";
    out << "configuration OK\n";
    return 0;
}

} // namespace cbd
