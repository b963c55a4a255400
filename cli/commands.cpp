// The cbctl commands (see commands.hpp).
#include "cli/commands.hpp"

#include "cli/connection.hpp"
#include "cli/exit_codes.hpp"
#include "cli/observe_commands.hpp"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <iostream>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <unistd.h>

namespace cbctl {

namespace {

using Json = nlohmann::ordered_json;

// JSON string escaping that leaves every other byte as it is, so even bytes
// that are not UTF-8 reach the daemon (which then says why it refuses them).
void append_raw_json_string(std::string& out, const std::string& text) {
    out += '"';
    for (unsigned char c : text) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20) {
            char esc[8];
            std::snprintf(esc, sizeof esc, "\\u%04x", c);
            out += esc;
        } else {
            out += static_cast<char>(c);
        }
    }
    out += '"';
}

void print_error_reply(const Json& reply) {
    std::string code = "error", message;
    if (auto e = reply.find("error"); e != reply.end() && e->is_object()) {
        code = e->value("code", "error");
        message = e->value("message", "");
    }
    std::cerr << "cbctl: " << code << (message.empty() ? "" : ": " + message) << "\n";
}

void print_field(const Json& value) {
    if (value.is_string())
        std::cout << value.get<std::string>() << "\n";
    else
        std::cout << value.dump() << "\n";
}

// The wall clock, as the daemon's epoch times (a pin's `until`) are.
std::int64_t epoch_ms_now() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::optional<Json> parse_reply(const std::string& line) {
    Json reply = Json::parse(line, nullptr, false);
    if (reply.is_discarded() || !reply.is_object() || !reply.contains("ok") ||
        !reply["ok"].is_boolean())
        return std::nullopt;
    return reply;
}

} // namespace

void append_string_field(std::string& line, const std::string& name, const std::string& text) {
    line += ",\"" + name + "\":";
    append_raw_json_string(line, text);
}

std::string with_fields(std::string line, const std::string& more) {
    line.resize(line.size() - 2); // "}\n"
    return line + more + "}\n";
}

std::string key_request(const std::string& op, const std::string& key,
                        const std::optional<std::string>& to) {
    std::string line = "{\"op\":";
    append_raw_json_string(line, op);
    line += ",\"key\":";
    append_raw_json_string(line, key);
    if (to) {
        line += ",\"to\":";
        append_raw_json_string(line, *to);
    }
    line += "}\n";
    return line;
}

int run_single(const GlobalOptions& options, const SingleRequest& request) {
    std::string reply_line;
    try {
        const auto deadline = Clock::now() + options.timeout;
        auto conn = Connection::open(options.socket_path, deadline);
        conn.send_all(request.line, deadline);
        reply_line = conn.read_line(deadline);
    } catch (const ConnectionError& e) {
        std::cerr << "cbctl: " << e.what() << "\n";
        return kExitUnreachable;
    }

    auto reply = parse_reply(reply_line);
    if (!reply) {
        std::cerr << "cbctl: unreadable reply from cbd at " << options.socket_path << "\n";
        return kExitUnreachable;
    }
    if (!(*reply)["ok"].get<bool>()) {
        print_error_reply(*reply);
        return kExitDaemonError;
    }
    reply->erase("ok");
    reply->erase("id");

    if (!request.field.empty()) {
        if (reply->contains(request.field))
            print_field((*reply)[request.field]);
        else if (reply->contains("snapshot") && (*reply)["snapshot"].contains(request.field))
            print_field((*reply)["snapshot"][request.field]);
        else
            std::cout << "\n"; // absent here (a permit when none was given): an empty line
    } else {
        switch (request.output) {
        case Output::Nothing:
            break;
        case Output::Line:
            std::cout << reply_line << "\n";
            break;
        case Output::Snapshot:
            std::cout << (*reply)["snapshot"].dump() << "\n";
            // The snapshot alone says nothing of a pin: on a terminal, a
            // line after it does. Scripts keep the one JSON line.
            if (reply->contains("forced") && (*reply)["forced"].is_object() &&
                isatty(STDOUT_FILENO))
                std::cout << "forced: " << pin_text((*reply)["forced"], epoch_ms_now()) << "\n";
            break;
        case Output::Reply:
            std::cout << reply->dump() << "\n";
            break;
        }
    }
    std::cout.flush();
    if (request.denial_exits_75 && reply->value("allowed", true) == false)
        return 75;
    return kExitOk;
}

int run_pipe(const GlobalOptions& options, int input_fd, const PipeHooks& hooks) {
    // Keep at most this much unsent input, so a daemon that stops reading
    // cannot make us buffer the whole of stdin.
    constexpr std::size_t kMaxPending = 1024 * 1024;

    std::size_t sent_lines = 0, replies = 0;
    std::size_t input_line = 0;           // numbering of non-blank input lines
    std::deque<std::size_t> line_of_sent; // input line of each unanswered request
    bool any_error = false;
    std::string request;
    try {
        auto conn = Connection::open(options.socket_path, Clock::now() + options.timeout);
        std::string pending; // complete request lines not yet written
        std::string partial; // an unfinished line from stdin
        bool input_open = true;
        bool send_closed = false;
        std::string line;
        char buf[64 * 1024];

        for (;;) {
            if (!input_open && pending.empty() && !send_closed) {
                conn.shutdown_send(); // tells cbd we are done; it answers all first
                send_closed = true;
            }
            if (send_closed && replies == sent_lines)
                break;

            pollfd fds[2] = {{conn.fd(), POLLIN, 0}, {input_fd, 0, 0}};
            if (!pending.empty())
                fds[0].events |= POLLOUT;
            const bool want_input = input_open && pending.size() < kMaxPending;
            if (want_input)
                fds[1].events = POLLIN;
            int n = poll(fds, want_input ? 2 : 1, static_cast<int>(options.timeout.count()));
            if (n < 0 && errno == EINTR)
                continue;
            if (n == 0)
                throw ConnectionError("timed out waiting for cbd at " + options.socket_path);

            if (want_input && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
                ssize_t got = read(input_fd, buf, sizeof buf);
                if (got <= 0) {
                    input_open = false;
                    if (!partial.empty())
                        partial += '\n'; // the last line had no newline; send it anyway
                } else {
                    partial.append(buf, static_cast<std::size_t>(got));
                }
                // Move complete lines to `pending`, counting those cbd answers
                // (it skips blank ones).
                std::size_t start = 0, nl;
                while ((nl = partial.find('\n', start)) != std::string::npos) {
                    std::string_view l(partial.data() + start, nl - start);
                    if (l.find_first_not_of(" \t\r") != std::string_view::npos) {
                        ++input_line;
                        if (hooks.rewrite) {
                            if (auto error = hooks.rewrite(input_line, l, request)) {
                                std::cerr << "cbctl: line " << input_line << ": " << *error << "\n";
                                any_error = true;
                                start = nl + 1;
                                continue;
                            }
                            l = request;
                        }
                        pending.append(l);
                        pending += '\n';
                        ++sent_lines;
                        line_of_sent.push_back(input_line);
                    }
                    start = nl + 1;
                }
                partial.erase(0, start);
            }
            if (fds[0].revents & POLLOUT)
                pending.erase(0, conn.write_some(pending));
            if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
                const bool open = conn.read_available();
                while (conn.take_line(line)) {
                    ++replies;
                    const std::size_t line_no = line_of_sent.empty() ? 0 : line_of_sent.front();
                    if (!line_of_sent.empty())
                        line_of_sent.pop_front();
                    if (hooks.on_reply) {
                        if (!hooks.on_reply(line_no, line))
                            any_error = true;
                        continue;
                    }
                    std::cout << line << "\n";
                    auto reply = parse_reply(line);
                    if (!reply || !(*reply)["ok"].get<bool>())
                        any_error = true;
                }
                if (!open)
                    throw ConnectionError(
                        "cbd at " + options.socket_path + " closed the connection after " +
                        std::to_string(replies) + " of " + std::to_string(sent_lines) + " replies");
            }
        }
    } catch (const ConnectionError& e) {
        std::cout.flush();
        std::cerr << "cbctl: " << e.what() << "\n";
        return kExitUnreachable;
    }
    std::cout.flush();
    return any_error ? kExitDaemonError : kExitOk;
}

} // namespace cbctl
