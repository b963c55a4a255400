// cbctl run (see run_command.hpp).
#include "cli/run_command.hpp"

#include "cli/connection.hpp"
#include "cli/exit_codes.hpp"
#include "common/protocol.hpp"
#include "common/reply.hpp"

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
    // The user interrupted it (SIGINT to cbctl, forwarded): the call was
    // cancelled, so it is reported `ignored`, neither success nor failure.
    bool interrupted = false;
    std::int64_t duration_ms = 0; // from start until CMD ended
};

// The terminal cbctl was started in the foreground of, if any: CMD's process
// group is given the terminal so an interactive command can read it (a
// background group that reads the terminal would be stopped by SIGTTIN).
// -1 when stdin is not a terminal or cbctl runs in the background.
int foreground_terminal() {
    if (!isatty(STDIN_FILENO) || tcgetpgrp(STDIN_FILENO) != getpgrp())
        return -1;
    return STDIN_FILENO;
}

// Makes `group` the terminal's foreground process group. SIGTTOU is blocked
// around the call: a process outside the foreground group (cbctl taking the
// terminal back) would otherwise be stopped by it.
void give_terminal(int terminal, pid_t group) {
    if (terminal < 0)
        return;
    sigset_t ttou, previous;
    sigemptyset(&ttou);
    sigaddset(&ttou, SIGTTOU);
    sigprocmask(SIG_BLOCK, &ttou, &previous);
    tcsetpgrp(terminal, group);
    sigprocmask(SIG_SETMASK, &previous, nullptr);
}

// Whether any process of the group is still alive (zombies count, which is
// why the wait for it is bounded by the kill deadline).
bool group_alive(pid_t group) {
    return kill(-group, 0) == 0 || errno == EPERM;
}

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

    const int terminal = foreground_terminal();
    const pid_t pid = fork();
    if (pid < 0) {
        result.exec_errno = errno;
        close(exec_pipe[0]);
        close(exec_pipe[1]);
        sigprocmask(SIG_SETMASK, &previous, nullptr);
        return result;
    }
    if (pid == 0) {
        // CMD and everything it starts form one process group, so that a
        // timeout or a signal to cbctl reaches all of them (a shell's
        // background jobs included), not just CMD.
        setpgid(0, 0);
        give_terminal(terminal, getpid()); // before exec: CMD may read at once
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
    // Also here, as shells do: whichever of the two runs first, the group
    // exists before cbctl signals it.
    setpgid(pid, pid);
    give_terminal(terminal, pid);
    close(exec_pipe[1]);
    int err = 0;
    if (read(exec_pipe[0], &err, sizeof err) == static_cast<ssize_t>(sizeof err))
        result.exec_errno = err;
    close(exec_pipe[0]);

    const auto start = Clock::now();
    // Set once the group was told to end (timeout or a signal to cbctl): the
    // group gets SIGKILL then, and cbctl stops waiting for members other than
    // CMD itself after it.
    std::optional<Clock::time_point> kill_at;
    bool killed = false;
    bool reaped = false;
    auto end_group = [&](int sig, Clock::time_point now) {
        kill(-pid, sig);
        kill(-pid, SIGCONT); // a stopped member acts on the signal only once continued
        if (!kill_at)
            kill_at = now + options.kill_after;
    };
    for (;;) {
        int status = 0;
        if (!reaped) {
            const pid_t got = waitpid(pid, &status, WNOHANG | WUNTRACED);
            if (got == pid && WIFSTOPPED(status) && terminal >= 0) {
                // Ctrl-Z in CMD: stop cbctl too, so the shell sees the job
                // stopped; on `fg`, hand the terminal back and continue CMD.
                give_terminal(terminal, getpgrp());
                raise(SIGSTOP);
                give_terminal(terminal, pid);
                kill(-pid, SIGCONT);
            } else if (got == pid && !WIFSTOPPED(status)) {
                result.wait_status = status;
                result.duration_ms =
                    std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start)
                        .count();
                reaped = true;
            }
        }
        // Done when CMD has ended and, if the group was told to end, all of
        // it has (or it was killed: SIGKILL cannot be refused).
        if (reaped && (!kill_at || killed || !group_alive(pid)))
            break;
        timespec wait{0, 100'000'000}; // re-check at least every 100 ms
        const auto now = Clock::now();
        if (options.timeout && !result.timed_out) {
            const auto deadline = start + *options.timeout;
            if (now >= deadline) {
                result.timed_out = true;
                end_group(SIGTERM, now);
                continue;
            }
            const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now);
            if (left.count() < wait.tv_nsec)
                wait.tv_nsec = static_cast<long>(left.count());
        }
        if (kill_at && !killed) {
            if (now >= *kill_at) {
                kill(-pid, SIGKILL);
                killed = true;
                continue;
            }
            const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(*kill_at - now);
            if (left.count() < wait.tv_nsec)
                wait.tv_nsec = static_cast<long>(left.count());
        }
        if (wait.tv_nsec < 1'000'000)
            wait.tv_nsec = 1'000'000; // no busy loop on a deadline a hair away
        siginfo_t info{};
        const int sig = sigtimedwait(&watched, &info, &wait);
        if (sig == SIGINT)
            result.interrupted = true;
        if (sig == SIGINT || sig == SIGTERM)
            end_group(sig, Clock::now()); // forwarded; the group decides how to end
    }
    give_terminal(terminal, getpgrp());
    sigprocmask(SIG_SETMASK, &previous, nullptr);
    // Ctrl-C at a terminal goes to the foreground group, which is CMD's, not
    // to cbctl: CMD ending by SIGINT is the user interrupting it too.
    if (!result.timed_out && result.exec_errno == 0 && WIFSIGNALED(result.wait_status) &&
        WTERMSIG(result.wait_status) == SIGINT)
        result.interrupted = true;
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
        acquired = request_reply(
            global, "{\"op\":\"acquire\",\"key\":" + cbd::json_string(options.key) + "}\n");
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
    const bool success =
        !child.timed_out && child.exec_errno == 0 && WIFEXITED(child.wait_status) &&
        std::find(options.success_codes.begin(), options.success_codes.end(), status) !=
            options.success_codes.end();

    if (reachable) {
        // A report says how long CMD ran (slow-call accounting) and, when
        // the user interrupted it, that it neither failed nor succeeded.
        const char* outcome = child.interrupted ? "ignored" : success ? "success" : "failure";
        std::string line = "{\"op\":\"report\",\"key\":" + cbd::json_string(options.key) +
                           ",\"outcome\":\"" + outcome + "\"";
        if (child.exec_errno == 0)
            line +=
                ",\"durationMs\":" +
                std::to_string(std::clamp<std::int64_t>(child.duration_ms, 0, cbd::kMaxDurationMs));
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
