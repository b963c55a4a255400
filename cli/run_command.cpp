// cbctl run (see run_command.hpp).
#include "cli/run_command.hpp"

#include "cli/connection.hpp"
#include "cli/exit_codes.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

namespace cbctl {

namespace {

using Json = nlohmann::json;

// After --timeout, CMD gets SIGTERM; if still alive this much later, SIGKILL.
constexpr auto kKillGrace = std::chrono::seconds(2);

std::string json_string(const std::string& s) {
    return Json(s).dump(-1, ' ', false, Json::error_handler_t::replace);
}

// One request, one reply, on a fresh connection.
Json request_reply(const GlobalOptions& g, const std::string& line) {
    const auto deadline = Clock::now() + g.timeout;
    auto conn = Connection::open(g.socket_path, deadline);
    conn.send_all(line, deadline);
    Json reply = Json::parse(conn.read_line(deadline), nullptr, false);
    if (reply.is_discarded() || !reply.is_object() || !reply.contains("ok"))
        throw ConnectionError("unreadable reply from cbd at " + g.socket_path);
    return reply;
}

struct ChildResult {
    int wait_status = 0;
    bool timed_out = false;
    int exec_errno = 0; // non-zero when CMD could not be started
};

ChildResult run_child(const RunOptions& options) {
    ChildResult result;
    sigset_t watched, previous;
    sigemptyset(&watched);
    sigaddset(&watched, SIGCHLD);
    sigaddset(&watched, SIGINT);
    sigaddset(&watched, SIGTERM);
    sigprocmask(SIG_BLOCK, &watched, &previous);

    // The child reports a failed exec through this pipe; a successful exec
    // closes it (O_CLOEXEC) with nothing written.
    int exec_pipe[2];
    if (pipe2(exec_pipe, O_CLOEXEC) != 0) {
        result.exec_errno = errno;
        sigprocmask(SIG_SETMASK, &previous, nullptr);
        return result;
    }

    const pid_t pid = fork();
    if (pid < 0) {
        result.exec_errno = errno;
        close(exec_pipe[0]);
        close(exec_pipe[1]);
        sigprocmask(SIG_SETMASK, &previous, nullptr);
        return result;
    }
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, &previous, nullptr);
        std::vector<char*> argv;
        for (const auto& a : options.command)
            argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        execvp(argv[0], argv.data());
        const int err = errno;
        ssize_t ignored = write(exec_pipe[1], &err, sizeof err);
        (void)ignored;
        _exit(err == ENOENT ? kExitNotFound : kExitCannotExecute);
    }
    close(exec_pipe[1]);
    int err = 0;
    if (read(exec_pipe[0], &err, sizeof err) == static_cast<ssize_t>(sizeof err))
        result.exec_errno = err;
    close(exec_pipe[0]);

    const auto start = Clock::now();
    std::optional<Clock::time_point> kill_at;
    for (;;) {
        int status = 0;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            result.wait_status = status;
            break;
        }
        timespec wait{0, 100'000'000}; // re-check at least every 100 ms
        const auto now = Clock::now();
        if (options.timeout && !result.timed_out) {
            const auto deadline = start + *options.timeout;
            if (now >= deadline) {
                result.timed_out = true;
                kill(pid, SIGTERM);
                kill_at = now + kKillGrace;
                continue;
            }
            const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now);
            if (left.count() < wait.tv_nsec)
                wait.tv_nsec = static_cast<long>(left.count());
        }
        if (kill_at && now >= *kill_at) {
            kill(pid, SIGKILL);
            kill_at.reset();
        }
        siginfo_t info{};
        const int sig = sigtimedwait(&watched, &info, &wait);
        if (sig == SIGINT || sig == SIGTERM)
            kill(pid, sig); // forwarded; CMD decides how to end
    }
    sigprocmask(SIG_SETMASK, &previous, nullptr);
    return result;
}

int exit_status_of(const ChildResult& r) {
    if (r.timed_out)
        return kExitTimedOut;
    if (r.exec_errno != 0)
        return r.exec_errno == ENOENT ? kExitNotFound : kExitCannotExecute;
    if (WIFEXITED(r.wait_status))
        return WEXITSTATUS(r.wait_status);
    if (WIFSIGNALED(r.wait_status))
        return 128 + WTERMSIG(r.wait_status);
    return 1;
}

std::string seconds_text(std::int64_t ms) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / 1000.0);
    return buf;
}

} // namespace

std::optional<std::vector<int>> parse_exit_codes(const std::string& text) {
    std::vector<int> codes;
    std::stringstream in(text);
    std::string item;
    while (std::getline(in, item, ',')) {
        if (item.empty() || item.size() > 3 ||
            item.find_first_not_of("0123456789") != std::string::npos)
            return std::nullopt;
        const int code = std::stoi(item);
        if (code > 255)
            return std::nullopt;
        codes.push_back(code);
    }
    if (codes.empty())
        return std::nullopt;
    return codes;
}

int run_guarded(const GlobalOptions& global, const RunOptions& options) {
    const std::string& cmd = options.command.front();
    Json acquired;
    bool reachable = true;
    try {
        acquired = request_reply(global, "{\"op\":\"acquire\",\"key\":" + json_string(options.key) + "}\n");
    } catch (const ConnectionError& e) {
        reachable = false;
        if (options.fail_closed) {
            std::cerr << "cbctl: " << e.what() << "; not running '" << cmd << "' (--fail-closed)\n";
            return kExitUnreachable;
        }
        std::cerr << "cbctl: warning: " << e.what() << "; running '" << cmd
                  << "' anyway (fail open)\n";
    }

    if (reachable && !acquired["ok"].get<bool>()) {
        const std::string code = acquired["error"].value("code", "error");
        const std::string message = acquired["error"].value("message", "");
        // A store that fails is treated as closed, as the reference does
        // (backend_error too: a record broken in Redis; the warning names
        // the key to repair); a request cbd refuses (a bad key) is the
        // caller's mistake.
        const bool store_failure = code == "too_many_circuits" || code == "internal_error" ||
                                   code == "backend_unavailable" || code == "backend_error" ||
                                   code == "storage_unavailable";
        if (!store_failure || options.fail_closed) {
            std::cerr << "cbctl: " << code << ": " << message << "\n";
            return kExitDaemonError;
        }
        std::cerr << "cbctl: warning: " << code << ": " << message << "; running '" << cmd
                  << "' anyway (fail open)\n";
        reachable = false;
    }

    if (reachable && !acquired["allowed"].get<bool>()) {
        const std::string state = acquired["snapshot"].value("state", "open");
        const auto retry = acquired.value("retryAfterMs", std::int64_t{0});
        std::cerr << "cbctl: circuit '" << options.key << "' is " << state
                  << (state == "half-open" ? " and its probes are taken" : "") << "; retry in "
                  << seconds_text(retry) << "\n";
        return kExitCircuitOpen;
    }

    const ChildResult child = run_child(options);
    if (child.exec_errno != 0)
        std::cerr << "cbctl: cannot run '" << cmd << "': " << std::strerror(child.exec_errno)
                  << "\n";
    if (child.timed_out)
        std::cerr << "cbctl: '" << cmd << "' timed out after "
                  << seconds_text(options.timeout->count()) << "\n";
    const int status = exit_status_of(child);
    const bool success = !child.timed_out && child.exec_errno == 0 &&
                         WIFEXITED(child.wait_status) &&
                         std::find(options.success_codes.begin(), options.success_codes.end(),
                                   status) != options.success_codes.end();

    if (reachable) {
        std::string line = "{\"op\":\"report\",\"key\":" + json_string(options.key) +
                           ",\"outcome\":\"" + (success ? "success" : "failure") + "\"";
        if (acquired.contains("generation"))
            line += ",\"generation\":" + acquired["generation"].dump();
        if (acquired.contains("permit"))
            line += ",\"permit\":" + acquired["permit"].dump();
        line += "}\n";
        try {
            Json reply = request_reply(global, line);
            if (!reply["ok"].get<bool>())
                std::cerr << "cbctl: warning: report refused: "
                          << reply["error"].value("code", "error") << "\n";
        } catch (const ConnectionError& e) {
            std::cerr << "cbctl: warning: could not report the outcome: " << e.what() << "\n";
        }
    }
    return status;
}

} // namespace cbctl
