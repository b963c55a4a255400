// cbctl: parses the command line and runs one command (commands.hpp,
// run_command.hpp). Every subcommand only builds a request; the daemon
// validates it.
#include "cli/commands.hpp"
#include "cli/exit_codes.hpp"
#include "cli/observe_commands.hpp"
#include "cli/run_command.hpp"
#include "cli/state_commands.hpp"
#include "common/duration.hpp"
#include "common/policy.hpp"
#include "common/protocol.hpp"
#include "common/socket_path.hpp"

#include <CLI/CLI.hpp>
#include <array>
#include <cctype>
#include <charconv>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <unistd.h>

namespace {

constexpr const char* kExitCodesHelp = R"(Exit codes:
  0    done (acquire: allowed)
  1    cbd answered with an error (its code and message are on stderr)
  2    usage error
  3    cbd unreachable, connection lost, or timed out
  75   acquire/run: the circuit denied the call
  run: CMD's own status (128+N when killed by signal N), 124 when --timeout
       ended it, 126/127 when it could not be run
Numbers are plain decimals in the protocol's range, never clamped: anything
else is a usage error naming the option.
run: CMD runs in its own process group (given the terminal when cbctl is in
its foreground). On --timeout, and on SIGINT/SIGTERM to cbctl, the whole
group gets the signal (SIGTERM for --timeout), then SIGKILL if still alive
--kill-after later (default 5s).)";

// A CLI11 validator for durations ("300ms", "5s", "2m").
struct DurationValidator : public CLI::Validator {
    DurationValidator() {
        name_ = "DURATION";
        func_ = [](const std::string& text) {
            return cbd::parse_duration(text)
                       ? std::string()
                       : "'" + text + "' is not a duration such as 300ms, 5s or 2m";
        };
    }
};

// Every whole-number option: decimal digits only, from `min` to `max`, else
// a usage error naming the option. Applied as a transform, so the option's
// own conversion then sees a plain canonical number: left to itself CLI11
// reads "-1" as 2^64-1, clamps "99999999999999999999" to 2^64-1 and takes
// "010" for octal, and cbd would be sent a number nobody typed.
struct WholeNumberRange : public CLI::Validator {
    WholeNumberRange(std::uint64_t min, std::uint64_t max) {
        name_ = "INTEGER";
        func_ = [min, max](std::string& text) -> std::string {
            std::uint64_t value = 0;
            const char* end = text.data() + text.size();
            const bool digits_only =
                !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
            const auto [stop, error] = std::from_chars(text.data(), end, value);
            if (!digits_only || error != std::errc{} || stop != end || value < min || value > max)
                return "'" + text + "' is not a whole number from " + std::to_string(min) + " to " +
                       std::to_string(max);
            text = std::to_string(value);
            return {};
        };
    }
};

// CLI11 names a value by its C++ type (TEXT, INT, UINT); --help says what
// is typed instead: a positional's own name says it already, and an
// option's value is named here, or after the option (--prefix PREFIX).
void name_values(CLI::App& app, bool top) {
    static const std::map<std::string, std::string, std::less<>> kValueNames = {
        {"--socket", "PATH"},         {"--ttl", "DUR"},
        {"--kill-after", "DUR"},      {"--generation", "N"},
        {"--expect-generation", "N"}, {"--duration-ms", "MS"},
        {"--expect", "STATE"},        {"--success-codes", "LIST"},
        {"--field", "FIELD"},         {"--unset", "FIELD"}};
    for (CLI::Option* option : app.get_options()) {
        const std::string type = option->get_type_name();
        if (!(type.starts_with("TEXT") || type.starts_with("INT") || type.starts_with("UINT")))
            continue;
        if (option->get_positional()) {
            // KEY, STATE, CMD: the name says it; OUTCOME lists its choices.
            option->type_name(type.find(':') == std::string::npos ? "" : "ONE OF");
            continue;
        }
        const std::string name =
            option->get_name(false, true).substr(0, option->get_name(false, true).find(','));
        std::string value;
        if (name == "--timeout")
            value = top ? "MS" : "DUR"; // cbctl's own wait; run's limit on CMD
        else if (auto it = kValueNames.find(name); it != kValueNames.end())
            value = it->second;
        else {
            for (const char c : name.substr(2))
                value +=
                    c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        }
        option->type_name(value);
    }
    for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
        name_values(*sub, false);
}

} // namespace

int main(int argc, char** argv) {
    using namespace cbctl;

    CLI::App app{"cbctl: read and change circuit-breaker state held by cbd."};
    app.set_version_flag("--version", std::string("cbctl ") + std::string(cbd::kVersion) +
                                          " (protocol " + std::to_string(cbd::kProtocolVersion) +
                                          ")");
    app.footer(kExitCodesHelp);
    app.require_subcommand(1);

    std::string socket_flag;
    long timeout_ms = 5000;
    app.add_option("--socket", socket_flag,
                   "cbd's socket (default: $CBD_SOCKET, else $XDG_RUNTIME_DIR/cbd/cbd.sock for "
                   "non-root users, else /run/cbd/cbd.sock)");
    app.add_option("--timeout", timeout_ms, "Milliseconds to wait for cbd (1 to 3600000)")
        ->capture_default_str()
        ->transform(WholeNumberRange(1, 3'600'000));

    const std::vector<std::string> snapshot_fields = {"state",           "failureCount",
                                                      "successCount",    "lastFailureTime",
                                                      "lastStateChange", "generation"};
    const std::vector<std::string> acquire_fields = {
        "allowed",      "permit",       "retryAfterMs",    "generation",     "state",
        "failureCount", "successCount", "lastFailureTime", "lastStateChange"};

    // The command that runs once parsing succeeded.
    std::function<int(const GlobalOptions&)> command;
    auto single = [&](std::function<SingleRequest()> build) {
        command = [build = std::move(build)](const GlobalOptions& g) {
            return run_single(g, build());
        };
    };

    std::string key, to, field, outcome, permit, expect, state, ttl, reason, success_codes;
    std::uint64_t generation = 0, expect_generation = 0;
    bool clear = false, fail_closed = false;
    std::vector<std::string> unset_fields, run_command;
    std::string run_timeout;
    std::array<std::string, cbd::kPolicyFieldCount> policy_values{};

    auto add_key_command = [&](const std::string& name, const std::string& help) {
        auto* sub = app.add_subcommand(name, help);
        sub->add_option("KEY", key, "Circuit key")->required();
        return sub;
    };
    auto add_field_option = [&](CLI::App* sub, const std::vector<std::string>& fields) {
        sub->add_option("--field", field, "Print only this field, bare")
            ->check(CLI::IsMember(fields));
    };

    // --- the store: get, success, failure, transition, reset ---------------
    for (const std::string op : {"get", "success", "failure"}) {
        auto* sub =
            add_key_command(op, op == "get" ? "Print a circuit's snapshot (created if unknown)"
                                : op == "success" ? "Record a success; print the new snapshot"
                                                  : "Record a failure; print the new snapshot");
        add_field_option(sub, snapshot_fields);
        sub->callback([&, op] {
            single([&, op] {
                return SingleRequest{key_request(op, key), Output::Snapshot, field};
            });
        });
    }

    auto* transition = add_key_command("transition", "Move a circuit to STATE");
    transition->add_option("STATE", to, "closed, open or half-open")->required();
    auto* expect_opt =
        transition->add_option("--expect", expect, "Only if the circuit is in this state now");
    const auto generation_range =
        WholeNumberRange(0, static_cast<std::uint64_t>(cbd::kMaxSafeInteger));
    auto* expect_gen_opt = transition
                               ->add_option("--expect-generation", expect_generation,
                                            "Only if the circuit is at this generation")
                               ->transform(generation_range);
    add_field_option(transition, snapshot_fields);
    transition->callback([&] {
        single([&] {
            std::string more;
            if (*expect_opt)
                append_string_field(more, "expect", expect);
            if (*expect_gen_opt)
                more += ",\"expectGeneration\":" + std::to_string(expect_generation);
            return SingleRequest{with_fields(key_request("transition", key, to), more),
                                 Output::Snapshot, field};
        });
    });

    auto* reset = add_key_command("reset", "Remove a circuit; prints nothing");
    reset->callback([&] {
        single([&] { return SingleRequest{key_request("reset", key), Output::Nothing, ""}; });
    });

    auto* ping = app.add_subcommand("ping", "Check that cbd answers; print its version");
    ping->callback([&] {
        single([] { return SingleRequest{"{\"op\":\"ping\"}\n", Output::Line, ""}; });
    });

    auto* pipe = app.add_subcommand(
        "pipe", "Send NDJSON requests from stdin, pipelined; print every reply line. "
                "Exits 1 if any reply was an error");
    pipe->callback(
        [&] { command = [](const GlobalOptions& g) { return run_pipe(g, STDIN_FILENO); }; });

    // --- the breaker ----------------------------------------------------------
    auto* acquire = add_key_command(
        "acquire", "Ask whether a call may go ahead; exits 75 when denied. Pass the generation "
                   "(and permit, for a probe) to `report`");
    add_field_option(acquire, acquire_fields);
    acquire->callback([&] {
        single([&] {
            SingleRequest r{key_request("acquire", key), Output::Reply, field};
            r.denial_exits_75 = true;
            return r;
        });
    });

    auto* report = add_key_command("report", "Report the outcome of an acquired call");
    report->add_option("OUTCOME", outcome, "success, failure or ignored")
        ->required()
        ->check(CLI::IsMember({"success", "failure", "ignored"}));
    std::uint64_t duration_ms = 0;
    auto* duration_opt =
        report->add_option("--duration-ms", duration_ms, "How long the call took (slow calls)")
            ->transform(WholeNumberRange(0, static_cast<std::uint64_t>(cbd::kMaxDurationMs)));
    auto* generation_opt =
        report->add_option("--generation", generation, "The generation acquire returned")
            ->transform(generation_range);
    auto* permit_opt = report->add_option("--permit", permit, "The permit acquire returned");
    add_field_option(report, {"stale", "generation", "state", "failureCount", "successCount",
                              "lastFailureTime", "lastStateChange"});
    report->callback([&] {
        single([&] {
            std::string more;
            append_string_field(more, "outcome", outcome);
            if (*generation_opt)
                more += ",\"generation\":" + std::to_string(generation);
            if (*permit_opt)
                append_string_field(more, "permit", permit);
            if (*duration_opt)
                more += ",\"durationMs\":" + std::to_string(duration_ms);
            return SingleRequest{with_fields(key_request("report", key), more), Output::Reply,
                                 field};
        });
    });

    auto* force = add_key_command("force", "Pin a circuit open or closed until unforced");
    force->add_option("STATE", state, "open or closed")->required();
    auto* ttl_opt = force->add_option("--ttl", ttl, "Lift the pin after this long (5m, 1h)")
                        ->check(DurationValidator());
    auto* reason_opt = force->add_option("--reason", reason, "Why, for whoever looks later");
    force->callback([&] {
        single([&] {
            std::string more;
            append_string_field(more, "state", state);
            if (*ttl_opt)
                more += ",\"ttlMs\":" + std::to_string(cbd::parse_duration(ttl)->count());
            if (*reason_opt)
                append_string_field(more, "reason", reason);
            return SingleRequest{with_fields(key_request("force", key), more), Output::Reply, ""};
        });
    });

    auto* unforce = add_key_command("unforce", "Lift a pin; normal rules resume");
    unforce->callback([&] {
        single([&] { return SingleRequest{key_request("unforce", key), Output::Reply, ""}; });
    });

    auto* configure = add_key_command("configure", "Set this key's own policy values");
    std::array<CLI::Option*, cbd::kPolicyFieldCount> policy_opts{};
    for (std::size_t i = 0; i < cbd::kPolicyFieldCount; ++i) {
        const auto policy_field = static_cast<cbd::PolicyField>(i);
        // The protocol's range (or names) for each field, checked here too.
        policy_opts[i] =
            configure
                ->add_option(cbd::policy_flag_name(policy_field), policy_values[i],
                             std::string(cbd::kPolicyFieldHelp[i]))
                ->type_name(std::string(cbd::kPolicyFieldValueNames[i]))
                ->check([policy_field](const std::string& v) {
                    std::string error;
                    return cbd::parse_policy_text(policy_field, v, error) ? std::string() : error;
                });
    }
    configure
        ->add_option("--unset", unset_fields, "Drop this field from the key's policy (repeatable)")
        ->check(CLI::IsMember(std::vector<std::string>(cbd::kPolicyFieldNames.begin(),
                                                       cbd::kPolicyFieldNames.end())));
    configure->add_flag("--clear", clear, "Drop the key's whole policy first");
    configure->callback([&] {
        single([&] {
            std::string policy = clear ? "null" : "{";
            if (!clear) {
                bool first = true;
                auto add = [&](std::string_view name, const std::string& value) {
                    policy += (first ? "\"" : ",\"") + std::string(name) + "\":" + value;
                    first = false;
                };
                for (std::size_t i = 0; i < cbd::kPolicyFieldCount; ++i)
                    if (*policy_opts[i]) {
                        std::string error;
                        const auto policy_field = static_cast<cbd::PolicyField>(i);
                        add(cbd::kPolicyFieldNames[i],
                            cbd::policy_value_json(
                                policy_field,
                                *cbd::parse_policy_text(policy_field, policy_values[i], error)));
                    }
                for (const auto& name : unset_fields)
                    add(name, "null");
                policy += "}";
            }
            return SingleRequest{
                with_fields(key_request("configure", key), ",\"policy\":" + policy), Output::Reply,
                ""};
        });
    });

    PolicyOptions policy_options;
    auto* policy = app.add_subcommand(
        "policy", "Print a key's effective policy and where each value comes from: a table on "
                  "a terminal, JSON otherwise");
    policy->add_option("KEY", policy_options.key, "Circuit key")->required();
    auto* policy_field =
        policy
            ->add_option("--field", policy_options.fields,
                         "Print only these fields' values, bare, one a line (repeatable, or "
                         "NAME,NAME)")
            ->type_name("NAME")
            ->delimiter(',')
            ->allow_extra_args(false) // `--field mode KEY`: KEY is the key
            ->check(CLI::IsMember(std::vector<std::string>(cbd::kPolicyFieldNames.begin(),
                                                           cbd::kPolicyFieldNames.end())));
    policy->add_flag("--json", policy_options.json, "JSON even on a terminal")
        ->excludes(policy_field);
    policy->callback(
        [&] { command = [&](const GlobalOptions& g) { return run_policy(g, policy_options); }; });

    // --- observing --------------------------------------------------------------
    WatchOptions watch_options;
    auto* watch =
        app.add_subcommand("watch", "Print state changes as they happen, until interrupted");
    watch->add_option("KEY", watch_options.key, "Only this circuit");
    auto* watch_prefix =
        watch->add_option("--prefix", watch_options.prefix, "Only circuits whose key starts so");
    std::string watch_format = "json";
    watch->add_option("--format", watch_format, "json (one event per line) or text")
        ->check(CLI::IsMember({"json", "text"}));
    watch->callback([&] {
        command = [&, watch_prefix](const GlobalOptions& g) {
            watch_options.has_prefix = watch_prefix->count() > 0;
            watch_options.text = watch_format == "text";
            return run_watch(g, watch_options);
        };
    });

    ListOptions list_options;
    auto* list = app.add_subcommand(
        "list", "List circuits in key order: a table on a terminal, JSON lines otherwise");
    list->add_option("--prefix", list_options.prefix, "Only keys starting so");
    list->add_option("--state", list_options.state, "Only circuits in this state")
        ->check(CLI::IsMember({"closed", "open", "half-open"}));
    auto* list_json = list->add_flag("--json", list_options.json, "JSON lines even on a terminal");
    list->add_flag("--keys", list_options.keys,
                   "Only the keys, one a line (shell completion uses this)")
        ->excludes(list_json);
    list->callback(
        [&] { command = [&](const GlobalOptions& g) { return run_list(g, list_options); }; });

    bool stats_json = false;
    auto* stats =
        app.add_subcommand("stats", "Daemon counters: readable on a terminal, JSON otherwise");
    stats->add_flag("--json", stats_json, "JSON even on a terminal");
    stats->callback(
        [&] { command = [&](const GlobalOptions& g) { return run_stats(g, stats_json); }; });

    bool per_circuit = false;
    auto* metrics = app.add_subcommand("metrics", "Prometheus text exposition of the counters");
    metrics->add_flag("--per-circuit", per_circuit,
                      "Add a state gauge per circuit (the first 10,000 keys)");
    metrics->callback(
        [&] { command = [&](const GlobalOptions& g) { return run_metrics(g, per_circuit); }; });

    // --- moving state -----------------------------------------------------------
    std::string export_prefix;
    auto* export_cmd = app.add_subcommand(
        "export", "Write every circuit (snapshot, generation, pin, policy override) as JSON "
                  "lines, for backups and for `import` elsewhere");
    export_cmd->add_option("--prefix", export_prefix, "Only keys starting so");
    export_cmd->callback(
        [&] { command = [&](const GlobalOptions& g) { return run_export(g, export_prefix); }; });
    auto* import_cmd = app.add_subcommand(
        "import", "Read `cbctl export` lines from stdin and make each key hold exactly that "
                  "(admin). Exits 1 if any line failed; errors name the line");
    import_cmd->callback(
        [&] { command = [](const GlobalOptions& g) { return run_import(g, STDIN_FILENO); }; });

    // --- run ------------------------------------------------------------------
    auto* run = app.add_subcommand("run", "Run CMD through the circuit: denied calls exit 75 "
                                          "without running; the outcome is reported");
    run->add_option("KEY", key, "Circuit key")->required();
    run->add_option("--timeout", run_timeout, "Kill CMD after this long (300ms, 5s, 2m); exit 124")
        ->check(DurationValidator());
    std::string kill_after;
    run->add_option("--kill-after", kill_after,
                    "After --timeout or a SIGINT/SIGTERM to cbctl, SIGKILL CMD's process group "
                    "if it is still alive this much later (default 5s)")
        ->check(DurationValidator());
    run->add_option("--success-codes", success_codes,
                    "Exit statuses that count as success (default 0), as 0,3");
    run->add_flag("--fail-closed", fail_closed, "If cbd is unreachable, exit 3 instead of running");
    run->add_option("CMD", run_command, "The command and its arguments, after --")->required();
    run->callback([&] {
        command = [&](const GlobalOptions& g) {
            RunOptions o;
            o.key = key;
            if (!run_timeout.empty())
                o.timeout = cbd::parse_duration(run_timeout);
            if (!kill_after.empty())
                o.kill_after = *cbd::parse_duration(kill_after);
            if (!success_codes.empty()) {
                auto codes = parse_exit_codes(success_codes);
                if (!codes) {
                    std::cerr << "cbctl: --success-codes: '" << success_codes
                              << "' is not a list of exit statuses such as 0,3\n";
                    return kExitUsage;
                }
                o.success_codes = *codes;
            }
            o.fail_closed = fail_closed;
            o.command = run_command;
            return run_guarded(g, o);
        };
    });

    name_values(app, true);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        // CLI11 uses 0 for --help/--version and 100+ for parse errors.
        return app.exit(e) == 0 ? kExitOk : kExitUsage;
    }

    GlobalOptions options;
    options.socket_path = cbd::resolve_socket_path(socket_flag);
    options.timeout = std::chrono::milliseconds(timeout_ms);
    try {
        return command(options);
    } catch (const nlohmann::json::exception& e) {
        // A reply that parsed as JSON but holds a field of the wrong type:
        // not what cbd sends, so whatever answers there is not (or no
        // longer) cbd. One line and exit 3, as for a reply that is not
        // JSON at all, never an uncaught exception.
        std::cerr << "cbctl: a reply from " << options.socket_path << " is not what cbd sends ("
                  << e.what() << ")\n";
        return kExitUnreachable;
    }
}
