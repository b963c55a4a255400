// watch, list, policy, stats, metrics (see observe_commands.hpp).
#include "cli/observe_commands.hpp"

#include "cli/connection.hpp"
#include "cli/exit_codes.hpp"
#include "common/reply.hpp"

#include <algorithm>
#include <ctime>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>
#include <unistd.h>
#include <utility>
#include <vector>

namespace cbctl {

namespace {

using Json = nlohmann::ordered_json;

std::string forced_text(const Json& forced) {
    if (!forced.is_object())
        return "-";
    const auto state = forced.find("state");
    std::string text =
        state != forced.end() && state->is_string() ? state->get<std::string>() : "?";
    if (const auto until = forced.find("until");
        until != forced.end() && until->is_number_integer())
        text += " until " + human_time(until->get<std::int64_t>());
    // Quoted, as the pin line of `get` prints it: a reason is the peer's
    // text, and printed raw its bytes would go to the terminal as they are.
    if (const auto reason = forced.find("reason");
        reason != forced.end() && reason->is_string() && !reason->get<std::string>().empty())
        text += " (" + cbd::json_string(reason->get<std::string>()) + ")";
    return text;
}

// "42s", "5m", "4m 59s", "1h 5m", "2d": the largest unit and the next,
// rounded up to a second (a pin with 300000 ms left is "5m").
std::string human_duration(std::int64_t ms) {
    constexpr std::pair<std::int64_t, const char*> kUnits[] = {
        {86400, "d"}, {3600, "h"}, {60, "m"}, {1, "s"}};
    const std::int64_t secs = (ms + 999) / 1000;
    for (std::size_t i = 0; i + 1 < std::size(kUnits); ++i) {
        const auto [size, name] = kUnits[i];
        if (secs < size)
            continue;
        std::string text = std::to_string(secs / size) + name;
        const auto [next_size, next_name] = kUnits[i + 1];
        if (const std::int64_t rest = secs % size / next_size; rest > 0)
            text += " " + std::to_string(rest) + next_name;
        return text;
    }
    return std::to_string(secs) + "s";
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
    std::vector<std::size_t> widths;
    for (const auto& row : rows)
        for (std::size_t i = 0; i < row.size(); ++i) {
            if (widths.size() <= i)
                widths.push_back(0);
            widths[i] = std::max(widths[i], row[i].size());
        }
    for (const auto& row : rows) {
        std::string line;
        for (std::size_t i = 0; i < row.size(); ++i) {
            line += row[i];
            if (i + 1 < row.size())
                line += std::string(widths[i] - row[i].size() + 2, ' ');
        }
        std::cout << line << "\n";
    }
}

} // namespace

// Sends one request on `conn` and returns the reply, or prints the error and
// returns nullopt with `exit_code` set.
std::optional<nlohmann::ordered_json> ask(Connection& conn, const GlobalOptions& g,
                                          const std::string& line, int& exit_code) {
    const auto deadline = Clock::now() + g.timeout;
    conn.send_all(line, deadline);
    Json reply = Json::parse(conn.read_line(deadline), nullptr, false);
    if (reply.is_discarded() || !reply.is_object() || !reply.contains("ok")) {
        std::cerr << "cbctl: unreadable reply from cbd at " << g.socket_path << "\n";
        exit_code = kExitUnreachable;
        return std::nullopt;
    }
    if (!reply["ok"].get<bool>()) {
        std::cerr << "cbctl: " << reply["error"].value("code", "error") << ": "
                  << reply["error"].value("message", "") << "\n";
        exit_code = kExitDaemonError;
        return std::nullopt;
    }
    return reply;
}

// One request on a connection of its own: the reply, or nullopt with the
// error printed and `exit_code` set.
std::optional<nlohmann::ordered_json> ask_once(const GlobalOptions& g, const std::string& line,
                                               int& exit_code) {
    try {
        auto conn = Connection::open(g.socket_path, Clock::now() + g.timeout);
        return ask(conn, g, line, exit_code);
    } catch (const ConnectionError& e) {
        std::cerr << "cbctl: " << e.what() << "\n";
        exit_code = kExitUnreachable;
        return std::nullopt;
    }
}

std::string human_time(std::int64_t epoch_ms) {
    if (epoch_ms <= 0)
        return "-";
    const std::time_t secs = static_cast<std::time_t>(epoch_ms / 1000);
    std::tm tm{};
    localtime_r(&secs, &tm);
    char buf[40];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
    char ms[8];
    std::snprintf(ms, sizeof ms, ".%03d", static_cast<int>(epoch_ms % 1000));
    return std::string(buf) + ms;
}

std::string pin_text(const Json& forced, std::int64_t now_ms) {
    // Whatever the reply holds: a field of another type reads as absent.
    const auto string_field = [&](const char* name) {
        const auto it = forced.find(name);
        return it != forced.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    const auto integer_field = [](const Json& object,
                                  const char* name) -> std::optional<std::int64_t> {
        const auto it = object.find(name);
        if (it == object.end() || !it->is_number_integer())
            return std::nullopt;
        return it->get<std::int64_t>();
    };
    const std::string state = string_field("state");
    std::string text = state.empty() ? "?" : state;
    if (const auto until = integer_field(forced, "until"))
        text += " until " + human_time(*until) +
                (*until > now_ms ? " (in " + human_duration(*until - now_ms) + ")" : " (due now)");
    else
        text += " until unforced";
    if (const auto by = forced.find("by"); by != forced.end() && by->is_object()) {
        std::string who;
        if (const auto uid = integer_field(*by, "uid"))
            who += " uid " + std::to_string(*uid);
        if (const auto pid = integer_field(*by, "pid"))
            who += " pid " + std::to_string(*pid);
        if (!who.empty())
            text += " by" + who;
    }
    // Quoted and escaped as JSON, so no byte of it can steer the terminal.
    if (const std::string reason = string_field("reason"); !reason.empty())
        text += ": " + cbd::json_string(reason);
    return text;
}

int run_watch(const GlobalOptions& g, const WatchOptions& o) {
    std::string request = "{\"op\":\"watch\"";
    if (!o.key.empty())
        request += ",\"key\":" + cbd::json_string(o.key);
    else if (o.has_prefix)
        request += ",\"prefix\":" + cbd::json_string(o.prefix);
    request += "}\n";
    int exit_code = kExitOk;
    try {
        auto conn = Connection::open(g.socket_path, Clock::now() + g.timeout);
        if (!ask(conn, g, request, exit_code))
            return exit_code;
        // From here on, wait as long as it takes: events come when they come.
        const auto forever = Clock::now() + std::chrono::hours(24 * 365 * 10);
        for (;;) {
            std::string line = conn.read_line(forever);
            Json event = Json::parse(line, nullptr, false);
            if (event.is_object() && event.value("event", "") == "overflow") {
                std::cerr << "cbctl: cbd dropped this watch: it fell behind and "
                          << event.value("dropped", 0) << " events were lost\n";
                return kExitDaemonError;
            }
            // In text mode, transitions and resets read as lines of their
            // own; everything else (and every event in JSON mode) as sent.
            const std::string kind = o.text && event.is_object() ? event.value("event", "") : "";
            if (kind == "transition") {
                const std::string cause = event.value("cause", "");
                std::string change = event.value("from", "") + " -> " + event.value("to", "");
                if (cause == "force")
                    change = "forced " + event.value("to", "");
                else if (cause == "unforce" || cause == "force-expired")
                    change = "pin lifted, " + event.value("to", "");
                std::cout << human_time(event.value("at", std::int64_t{0})) << "  "
                          << event.value("key", "") << "  " << change << "  (" << cause
                          << ", failures " << event["snapshot"].value("failureCount", 0) << ")\n";
            } else if (kind == "reset") {
                std::cout << human_time(event.value("at", std::int64_t{0})) << "  "
                          << event.value("key", "") << "  removed (reset)\n";
            } else {
                std::cout << line << "\n";
            }
            std::cout.flush(); // a watcher is often a pipe to something waiting
        }
    } catch (const ConnectionError& e) {
        std::cerr << "cbctl: " << e.what() << "\n";
        return kExitUnreachable;
    }
}

int run_list(const GlobalOptions& g, const ListOptions& o) {
    const bool table = !o.json && !o.keys && isatty(STDOUT_FILENO);
    std::vector<std::vector<std::string>> rows;
    if (table)
        rows.push_back(
            {"KEY", "STATE", "FAILURES", "SUCCESSES", "LAST FAILURE", "LAST CHANGE", "FORCED"});
    int exit_code = kExitOk;
    try {
        auto conn = Connection::open(g.socket_path, Clock::now() + g.timeout);
        std::string after;
        for (;;) {
            std::string request = "{\"op\":\"list\",\"limit\":1000";
            if (!o.prefix.empty())
                request += ",\"prefix\":" + cbd::json_string(o.prefix);
            if (!o.state.empty())
                request += ",\"state\":" + cbd::json_string(o.state);
            if (!after.empty())
                request += ",\"after\":" + cbd::json_string(after);
            request += "}\n";
            auto reply = ask(conn, g, request, exit_code);
            if (!reply)
                return exit_code;
            for (const auto& c : (*reply)["circuits"]) {
                if (o.keys) {
                    std::cout << c.value("key", "") << "\n";
                    continue;
                }
                if (!table) {
                    std::cout << c.dump() << "\n";
                    continue;
                }
                const auto& s = c["snapshot"];
                rows.push_back({c.value("key", ""), s.value("state", ""),
                                std::to_string(s.value("failureCount", 0)),
                                std::to_string(s.value("successCount", 0)),
                                human_time(s.value("lastFailureTime", std::int64_t{0})),
                                human_time(s.value("lastStateChange", std::int64_t{0})),
                                forced_text(c.contains("forced") ? c["forced"] : Json())});
            }
            if (!(*reply)["next"].is_string())
                break;
            after = (*reply)["next"].get<std::string>();
        }
    } catch (const ConnectionError& e) {
        std::cerr << "cbctl: " << e.what() << "\n";
        return kExitUnreachable;
    }
    if (table)
        print_table(rows);
    std::cout.flush();
    return kExitOk;
}

int run_policy(const GlobalOptions& g, const PolicyOptions& o) {
    int exit_code = kExitOk;
    auto reply = ask_once(g, key_request("policy", o.key), exit_code);
    if (!reply)
        return exit_code;
    reply->erase("ok");
    const Json no_object = Json::object();
    const auto object_field = [&](const char* name) -> const Json& {
        const auto it = reply->find(name);
        return it != reply->end() && it->is_object() ? *it : no_object;
    };
    const Json& policy = object_field("policy");
    // A value as a script wants it: a name bare, a number as written.
    const auto bare = [&](const std::string& field) {
        const auto it = policy.find(field);
        if (it == policy.end())
            return std::string();
        return it->is_string() ? it->get<std::string>() : it->dump();
    };
    if (!o.fields.empty()) {
        for (const auto& field : o.fields)
            std::cout << bare(field) << "\n";
        return kExitOk;
    }
    if (o.json || !isatty(STDOUT_FILENO)) {
        std::cout << reply->dump() << "\n";
        return kExitOk;
    }
    const Json& sources = object_field("source");
    const auto prefix = reply->find("prefix");
    std::vector<std::vector<std::string>> rows = {{"FIELD", "VALUE", "SOURCE"}};
    for (auto it = policy.begin(); it != policy.end(); ++it) {
        const auto source = sources.find(it.key());
        std::string from =
            source != sources.end() && source->is_string() ? source->get<std::string>() : "?";
        // Which rule: quoted, as a prefix may hold spaces (and nothing in
        // it may steer the terminal).
        if (from == "prefix" && prefix != reply->end() && prefix->is_string())
            from += " " + cbd::json_string(prefix->get<std::string>());
        rows.push_back({it.key(), bare(it.key()), from});
    }
    print_table(rows);
    return kExitOk;
}

int run_stats(const GlobalOptions& g, bool json) {
    int exit_code = kExitOk;
    auto reply = ask_once(g, "{\"op\":\"stats\"}\n", exit_code);
    if (!reply)
        return exit_code;
    reply->erase("ok");
    if (json || !isatty(STDOUT_FILENO)) {
        std::cout << reply->dump() << "\n";
        return kExitOk;
    }
    const auto& r = *reply;
    auto nonzero = [](const Json& counts) {
        std::string out;
        for (auto it = counts.begin(); it != counts.end(); ++it)
            if (it.value().get<std::uint64_t>() != 0)
                out += (out.empty() ? "" : ", ") + it.key() + " " +
                       std::to_string(it.value().get<std::uint64_t>());
        return out.empty() ? std::string("none") : out;
    };
    const auto& c = r["circuits"];
    std::cout << "cbd " << r.value("version", "") << " (protocol " << r.value("protocol", 0)
              << "), up " << r.value("uptimeMs", std::int64_t{0}) / 1000 << " s\n";
    if (c.is_object())
        std::cout << "circuits:    " << c.value("total", 0) << " (closed " << c.value("closed", 0)
                  << ", open " << c.value("open", 0) << ", half-open " << c.value("halfOpen", 0)
                  << ", forced " << c.value("forced", 0) << ")\n";
    if (r.contains("backend") && r["backend"].is_object()) {
        const auto& b = r["backend"];
        std::cout << "backend:     " << b.value("kind", "") << " at " << b.value("address", "")
                  << (b.value("up", false) ? ", up" : ", DOWN") << "; " << b.value("unavailable", 0)
                  << " operations unavailable, " << b.value("disconnects", 0) << " disconnects";
        if (b["lastError"].is_string())
            std::cout << "; last error: " << b["lastError"].get<std::string>();
        std::cout << "\n";
    }
    if (r.contains("storage") && r["storage"].is_object()) {
        const auto& st = r["storage"];
        std::cout << "storage:     " << st.value("path", "") << " (sync " << st.value("mode", "")
                  << ")" << (st.value("healthy", true) ? ", healthy" : ", FAILING") << "; "
                  << st.value("commits", 0) << " commits, " << st.value("failures", 0) << " failed";
        if (st["lastError"].is_string())
            std::cout << "; last error: " << st["lastError"].get<std::string>();
        std::cout << "\n";
    }
    std::cout << "connections: " << r["connections"].value("current", 0) << " now, "
              << r["connections"].value("total", 0) << " in all, "
              << r["connections"].value("refused", 0) << " refused\n"
              << "requests:    " << nonzero(r["requests"]) << "\n"
              << "errors:      " << nonzero(r["errors"]) << "\n"
              << "watchers:    " << r.value("watchers", 0) << ", events "
              << r["events"].value("emitted", 0) << " sent, " << r["events"].value("dropped", 0)
              << " dropped\n"
              << "memory:      " << r.value("residentMemoryBytes", std::uint64_t{0}) / 1024
              << " KiB resident\n";
    return kExitOk;
}

int run_metrics(const GlobalOptions& g, bool per_circuit) {
    int exit_code = kExitOk;
    auto reply = ask_once(
        g, per_circuit ? "{\"op\":\"metrics\",\"perCircuit\":true}\n" : "{\"op\":\"metrics\"}\n",
        exit_code);
    if (!reply)
        return exit_code;
    std::cout << (*reply)["text"].get<std::string>();
    std::cout.flush();
    return kExitOk;
}

} // namespace cbctl
