// The pure parts of Redis Sentinel support (see redis_sentinel.hpp).
#include "daemon/backends/redis/redis_sentinel.hpp"

#include <charconv>
#include <hiredis/hiredis.h>

namespace cbd {

namespace {

// A sentinel's answers are short; anything longer is not an address.
constexpr std::size_t kMaxAnswerBytes = 512;

std::string_view text_of(const redisReply* r) {
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
               ? std::string_view(r->str, r->len)
               : std::string_view();
}

// Printable for a log line: at most 64 bytes, control bytes as '?'.
std::string shown(std::string_view s) {
    std::string out;
    for (char c : s.substr(0, 64))
        out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
    if (s.size() > 64)
        out += "...";
    return "'" + out + "'";
}

std::optional<RedisEndpoint> endpoint_from(std::string_view ip, std::string_view port,
                                           std::string& error) {
    RedisEndpoint e;
    if (ip.empty() || ip.size() > 64 || port.empty() || port.size() > 5) {
        error = "the address " + shown(ip) + " port " + shown(port) + " is not an IP and a port";
        return std::nullopt;
    }
    // The parser's own message would quote the bytes raw: say it here.
    if (RedisEndpoint::parse("tcp://" + std::string(ip) + ":" + std::string(port), e)) {
        error = "the address " + shown(ip) + " port " + shown(port) +
                " is not an IP and a port (names are not resolved)";
        return std::nullopt;
    }
    return e;
}

bool valid_master_name(std::string_view name) {
    if (name.empty() || name.size() > kMaxSentinelMasterName)
        return false;
    for (char c : name) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
        if (!ok)
            return false;
    }
    return true;
}

} // namespace

std::optional<std::string> SentinelAddress::parse(std::string_view url, SentinelAddress& out) {
    out = SentinelAddress{};
    constexpr std::string_view scheme = "sentinel://";
    if (!url.starts_with(scheme))
        return "a Sentinel address starts with sentinel://";
    auto rest = url.substr(scheme.size());
    const auto slash = rest.find('/');
    if (slash == std::string_view::npos)
        return "a Sentinel address ends in /MASTERNAME (sentinel://10.0.0.1:26379/mymaster)";
    const auto name = rest.substr(slash + 1);
    if (!valid_master_name(name))
        return "'" + std::string(name.substr(0, kMaxSentinelMasterName)) +
               "' is not a master name (1 to " + std::to_string(kMaxSentinelMasterName) +
               " letters, digits, '-', '_' or '.')";
    out.master_name = std::string(name);
    auto list = rest.substr(0, slash);
    while (true) {
        const auto comma = list.find(',');
        const auto item = list.substr(0, comma);
        if (item.empty())
            return std::string("an empty sentinel in the list (HOST:PORT,HOST:PORT)");
        if (out.sentinels.size() == kMaxSentinels)
            return "more than " + std::to_string(kMaxSentinels) + " sentinels";
        RedisEndpoint e;
        if (auto problem = RedisEndpoint::parse("tcp://" + std::string(item), e))
            return "sentinel '" + std::string(item) + "': " + *problem;
        for (const auto& seen : out.sentinels)
            if (same_endpoint(seen, e))
                return "sentinel '" + std::string(item) + "' is listed twice";
        out.sentinels.push_back(std::move(e));
        if (comma == std::string_view::npos)
            break;
        list = list.substr(comma + 1);
    }
    return std::nullopt;
}

std::string SentinelAddress::describe() const {
    std::string s = "sentinel://";
    for (std::size_t i = 0; i < sentinels.size(); ++i) {
        if (i)
            s += ',';
        const auto& e = sentinels[i];
        s += e.host + ":" + std::to_string(e.port);
    }
    return s + "/" + master_name;
}

std::optional<RedisEndpoint> master_from_sentinel_reply(const redisReply* reply,
                                                        std::string& error) {
    if (!reply) {
        error = "no answer";
        return std::nullopt;
    }
    if (reply->type == REDIS_REPLY_NIL) {
        error = "the sentinel does not know the master name";
        return std::nullopt;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        error = "the sentinel answered " + shown(std::string_view(reply->str, reply->len));
        return std::nullopt;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING) {
        error = "the sentinel's answer is not an address (two strings: IP and port)";
        return std::nullopt;
    }
    return endpoint_from(text_of(reply->element[0]), text_of(reply->element[1]), error);
}

std::optional<RedisEndpoint> master_from_switch_message(const redisReply* reply,
                                                        std::string_view master_name,
                                                        std::string& error) {
    error.clear();
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        text_of(reply->element[0]) != "message" || text_of(reply->element[1]) != "+switch-master")
        return std::nullopt; // a subscribe confirmation, or another channel
    const auto payload = text_of(reply->element[2]);
    if (payload.size() > kMaxAnswerBytes) {
        error = "a +switch-master message of " + std::to_string(payload.size()) + " bytes";
        return std::nullopt;
    }
    std::vector<std::string_view> words;
    std::size_t at = 0;
    while (at <= payload.size() && words.size() < 6) {
        const auto space = payload.find(' ', at);
        words.push_back(payload.substr(at, space == std::string_view::npos ? space : space - at));
        if (space == std::string_view::npos)
            break;
        at = space + 1;
    }
    if (words.empty() || words[0] != master_name)
        return std::nullopt;
    if (words.size() != 5) {
        error = "a +switch-master message that is not NAME OLDIP OLDPORT NEWIP NEWPORT: " +
                shown(payload);
        return std::nullopt;
    }
    return endpoint_from(words[3], words[4], error);
}

std::optional<std::string> role_from_reply(const redisReply* reply, std::string& error) {
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
        (reply->element[0]->type != REDIS_REPLY_STRING &&
         reply->element[0]->type != REDIS_REPLY_STATUS)) {
        error = "ROLE answered something that is not a role";
        return std::nullopt;
    }
    const auto role = text_of(reply->element[0]);
    if (role != "master" && role != "slave" && role != "sentinel") {
        error = "ROLE answered " + shown(role);
        return std::nullopt;
    }
    return std::string(role);
}

bool same_endpoint(const RedisEndpoint& a, const RedisEndpoint& b) {
    return a.unix_path == b.unix_path && a.host == b.host && a.port == b.port;
}

bool MasterFollower::should_switch(const RedisEndpoint& named) const {
    return !master_ || !same_endpoint(*master_, named);
}

void MasterFollower::switched(const RedisEndpoint& to) {
    if (master_)
        ++failovers_;
    master_ = to;
}

} // namespace cbd
