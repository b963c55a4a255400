// SentinelDiscovery (see sentinel_discovery.hpp).
#include "daemon/backends/redis/sentinel_discovery.hpp"

#include "daemon/core/log.hpp"

#include <hiredis/hiredis.h>

namespace cbd {

namespace {
// While the master is not usable the sentinels are asked this often: a
// failover is announced within a second or two of the master's death, and
// a missed announcement must not cost more than this.
constexpr auto kAskWhileDown = std::chrono::milliseconds(200);
// While it is, a question now and then catches a switch whose announcement
// was missed (the subscription was moving between sentinels).
constexpr auto kAskWhileUp = std::chrono::milliseconds(5000);

std::string sentinel_name(const RedisEndpoint& e) {
    return e.host + ":" + std::to_string(e.port);
}
} // namespace

SentinelDiscovery::SentinelDiscovery(boost::asio::io_context& io, SentinelOptions options,
                                     OnMaster on_master)
    : options_(std::move(options)), on_master_(std::move(on_master)),
      query_rotation_(options_.address.sentinels.size()),
      subscription_rotation_(options_.address.sentinels.size()),
      query_(io,
             RedisOptions{options_.address.sentinels.at(0), options_.password, options_.timeout,
                          "Redis Sentinel"},
             {},
             [this](bool up, const std::string&) {
                 if (stopped_)
                     return;
                 // Connected: ask now rather than at the next tick.
                 if (up && !asking_)
                     schedule_ask(std::chrono::milliseconds(0));
                 // A sentinel that cannot be reached or answers garbage gives
                 // way to the next one for the next attempt.
                 if (!up)
                     query_.set_endpoint(options_.address.sentinels[query_rotation_.advance()]);
             }),
      subscription_(io,
                    RedisOptions{options_.address.sentinels.at(0), options_.password,
                                 options_.timeout, "Redis Sentinel"},
                    {RedisConnection::SetupCommand{{"SUBSCRIBE", "+switch-master"}, nullptr}},
                    [this](bool up, const std::string&) {
                        if (!up && !stopped_)
                            subscription_.set_endpoint(
                                options_.address.sentinels[subscription_rotation_.advance()]);
                    }),
      ask_timer_(io) {
    subscription_.on_push([this](const redisReply* reply) { on_message(reply); });
}

void SentinelDiscovery::start() {
    query_.start();
    subscription_.start();
    schedule_ask(std::chrono::milliseconds(0));
}

void SentinelDiscovery::stop() {
    stopped_ = true;
    ask_timer_.cancel();
    query_.stop();
    subscription_.stop();
}

void SentinelDiscovery::master_usable(bool usable) {
    const bool was = master_usable_;
    master_usable_ = usable;
    if (was && !usable && !stopped_)
        schedule_ask(std::chrono::milliseconds(0));
}

void SentinelDiscovery::schedule_ask(std::chrono::milliseconds after) {
    ask_timer_.expires_after(after);
    ask_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec && !stopped_)
            ask();
    });
}

void SentinelDiscovery::ask() {
    if (asking_)
        return; // its answer schedules the next question
    const auto next = master_usable_ ? kAskWhileUp : kAskWhileDown;
    // A subscription that stopped answering is found by its PING's deadline.
    if (subscription_.up())
        subscription_.command({"PING"}, [this](const redisReply* reply, const std::string&) {
            if (reply)
                on_message(reply); // a message that came before the pong lands here
        });
    if (!query_.up()) {
        schedule_ask(next); // connecting, or moving to the next sentinel
        return;
    }
    asking_ = true;
    const auto asked = query_.endpoint();
    query_.command({"SENTINEL", "get-master-addr-by-name", options_.address.master_name},
                   [this, asked, next](const redisReply* reply, const std::string&) {
                       asking_ = false;
                       if (stopped_)
                           return;
                       if (reply) {
                           std::string problem;
                           if (auto master = master_from_sentinel_reply(reply, problem)) {
                               last_problem_.clear();
                               on_master_(*master,
                                          "sentinel " + sentinel_name(asked) + " names it");
                           } else {
                               note_problem("sentinel " + sentinel_name(asked) + " about master '" +
                                            options_.address.master_name + "': " + problem +
                                            "; asking the next sentinel");
                               query_.drop("its answer is not a master address");
                           }
                       }
                       // No answer: the connection logs that, and moves on.
                       schedule_ask(next);
                   });
}

void SentinelDiscovery::on_message(const redisReply* reply) {
    std::string problem;
    auto master = master_from_switch_message(reply, options_.address.master_name, problem);
    if (master) {
        on_master_(*master, "sentinel " + sentinel_name(subscription_.endpoint()) +
                                " announced +switch-master");
        return;
    }
    if (!problem.empty())
        note_problem("sentinel " + sentinel_name(subscription_.endpoint()) + ": " + problem);
}

void SentinelDiscovery::note_problem(const std::string& message) {
    if (message == last_problem_)
        return;
    last_problem_ = message;
    log_warn("Redis Sentinel: " + message);
}

} // namespace cbd
