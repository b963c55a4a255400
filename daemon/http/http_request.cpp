// The pure parts of the HTTP listener (see http_request.hpp).
#include "daemon/http/http_request.hpp"

#include "daemon/dispatch/circuit_json.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <initializer_list>
#include <nlohmann/json.hpp>

namespace cbd {

namespace {

struct RouteSpec {
    std::string_view path;
    HttpRoute route;
    // The query parameters the route takes; any other is refused, so a typo
    // is a clear 400 rather than a silently unfiltered answer.
    std::initializer_list<std::string_view> params;
};

const std::array<RouteSpec, 5> kRoutes = {{
    {"/", HttpRoute::Dashboard, {}},
    {"/metrics", HttpRoute::Metrics, {"perCircuit"}},
    {"/api/circuits", HttpRoute::Circuits, {"prefix", "state", "after", "limit"}},
    {"/api/policy", HttpRoute::Policy, {"key"}},
    {"/api/events", HttpRoute::Events, {"prefix"}},
}};

int hex_value(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

// Percent-decodes one query component; nullopt on a bad escape.
std::optional<std::string> decode_component(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        if (c == '+') {
            out += ' ';
        } else if (c == '%') {
            if (i + 2 >= s.size())
                return std::nullopt;
            const int hi = hex_value(s[i + 1]);
            const int lo = hex_value(s[i + 2]);
            if (hi < 0 || lo < 0)
                return std::nullopt;
            out += static_cast<char>(hi * 16 + lo);
            i += 2;
        } else {
            out += c;
        }
    }
    return out;
}

bool is_ip_literal(std::string_view host) {
    boost::system::error_code ec;
    boost::asio::ip::make_address(std::string(host), ec);
    return !ec;
}

} // namespace

const std::string* HttpTarget::param(std::string_view name) const {
    for (const auto& [n, v] : params)
        if (n == name)
            return &v;
    return nullptr;
}

std::optional<HttpTarget> parse_http_target(std::string_view target, std::string& error) {
    if (target.size() > kMaxHttpTargetBytes) {
        error = "request target longer than " + std::to_string(kMaxHttpTargetBytes) + " bytes";
        return std::nullopt;
    }
    const auto question = target.find('?');
    const std::string_view path = target.substr(0, question);
    HttpTarget out;
    const RouteSpec* spec = nullptr;
    for (const auto& r : kRoutes)
        if (r.path == path)
            spec = &r;
    if (!spec)
        return out; // NotFound: the query does not matter
    out.route = spec->route;
    if (question == std::string_view::npos)
        return out;
    std::string_view query = target.substr(question + 1);
    while (!query.empty()) {
        const auto amp = query.find('&');
        const std::string_view pair = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
        if (pair.empty())
            continue;
        const auto eq = pair.find('=');
        auto name = decode_component(pair.substr(0, eq));
        auto value = decode_component(eq == std::string_view::npos ? std::string_view()
                                                                   : pair.substr(eq + 1));
        if (!name || !value) {
            error = "bad %-escape in the query";
            return std::nullopt;
        }
        if (std::find(spec->params.begin(), spec->params.end(), *name) == spec->params.end()) {
            // Quoted by the JSON library: the name may hold anything.
            error = std::string(path) + " takes no query parameter " +
                    nlohmann::json(*name).dump(-1, ' ', false,
                                               nlohmann::json::error_handler_t::replace);
            if (spec->params.size() != 0) {
                error += "; it takes";
                for (auto p : spec->params)
                    error += " " + std::string(p);
            }
            return std::nullopt;
        }
        if (out.param(*name)) {
            error = "query parameter " + nlohmann::json(*name).dump() + " given twice";
            return std::nullopt;
        }
        out.params.emplace_back(std::move(*name), std::move(*value));
    }
    return out;
}

std::optional<std::string> api_request_line(const HttpTarget& target, std::string& error) {
    nlohmann::json req;
    if (target.route == HttpRoute::Circuits) {
        req["op"] = "list";
    } else if (target.route == HttpRoute::Policy) {
        req["op"] = "policy";
    } else {
        error = "not an /api route with a protocol request";
        return std::nullopt;
    }
    for (const auto& [name, value] : target.params) {
        if (name == "limit") {
            std::uint64_t limit = 0;
            const auto* end = value.data() + value.size();
            const auto [ptr, ec] = std::from_chars(value.data(), end, limit);
            if (value.empty() || ec != std::errc() || ptr != end) {
                error = "limit must be a decimal integer";
                return std::nullopt;
            }
            req[name] = limit; // the dispatcher checks the range
        } else {
            req[name] = value;
        }
    }
    try {
        // Strict: a value that is not UTF-8 is refused here, with a clear
        // message, rather than passed on altered.
        return req.dump();
    } catch (const nlohmann::json::type_error&) {
        error = "a query parameter is not valid UTF-8";
        return std::nullopt;
    }
}

WatchFilter event_filter(const HttpTarget& target) {
    const std::string* prefix = target.param("prefix");
    if (!prefix || prefix->empty())
        return {};
    return {WatchFilter::Kind::Prefix, *prefix, nullptr};
}

bool metrics_per_circuit(const HttpTarget& target) {
    const std::string* v = target.param("perCircuit");
    return v && (*v == "true" || *v == "1");
}

unsigned http_status_for_reply(std::string_view reply) {
    // Every reply starts with "ok" when it has no id (ReplyWriter), so the
    // common case needs no parse.
    if (reply.starts_with(R"({"ok":true)"))
        return 200;
    const auto parsed = nlohmann::json::parse(reply, nullptr, false);
    if (!parsed.is_object() || !parsed.contains("error") || !parsed["error"].is_object())
        return 500;
    const auto code = parsed["error"].value("code", std::string());
    if (code == error_code_name(ErrorCode::BackendUnavailable) ||
        code == error_code_name(ErrorCode::StorageUnavailable))
        return 503;
    if (code == error_code_name(ErrorCode::BackendError) ||
        code == error_code_name(ErrorCode::InternalError))
        return 500;
    if (code == error_code_name(ErrorCode::PermissionDenied))
        return 403;
    return 400;
}

std::optional<boost::asio::ip::tcp::endpoint> parse_listen_address(std::string_view listen,
                                                                   std::string& error) {
    const auto colon = listen.rfind(':');
    if (colon == std::string_view::npos || colon == 0 || colon + 1 == listen.size()) {
        error = "expected ADDRESS:PORT, such as 127.0.0.1:9464";
        return std::nullopt;
    }
    std::string_view host = listen.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    const std::string_view port_text = listen.substr(colon + 1);
    unsigned port = 0;
    const auto [ptr, ec] =
        std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc() || ptr != port_text.data() + port_text.size() || port > 65535) {
        error = "bad port '" + std::string(port_text) + "' (expected 0 to 65535)";
        return std::nullopt;
    }
    boost::system::error_code address_ec;
    auto address = boost::asio::ip::make_address(std::string(host), address_ec);
    if (address_ec) {
        error = "'" + std::string(host) + "' is not an IP address";
        return std::nullopt;
    }
    return boost::asio::ip::tcp::endpoint(address, static_cast<unsigned short>(port));
}

bool http_host_allowed(std::string_view host, bool allow_remote) {
    // No Host at all (an HTTP/1.0 scraper, nc) is no browser: browsers
    // always send one, and only a browser can be steered by DNS rebinding.
    if (allow_remote || host.empty())
        return true;
    // Strip the port: "[::1]:8080", "127.0.0.1:8080", "localhost:8080".
    if (!host.empty() && host.front() == '[') {
        const auto close = host.find(']');
        if (close == std::string_view::npos)
            return false;
        const auto rest = host.substr(close + 1);
        if (!rest.empty() && rest.front() != ':')
            return false;
        return is_ip_literal(host.substr(1, close - 1));
    }
    const auto colon = host.find(':');
    const std::string_view name = host.substr(0, colon);
    return name == "localhost" || is_ip_literal(name);
}

std::string sse_message(std::string_view text) {
    if (!text.empty() && text.back() == '\n')
        text.remove_suffix(1);
    std::string out;
    out.reserve(text.size() + 8);
    for (;;) {
        const auto nl = text.find('\n');
        out += "data: ";
        out += text.substr(0, nl);
        out += '\n';
        if (nl == std::string_view::npos)
            break;
        text.remove_prefix(nl + 1);
    }
    out += '\n';
    return out;
}

bool SseQueue::push(const std::shared_ptr<const std::string>& event_line) {
    if (overflowed_)
        return false; // already dropped: the overflow message counts what was lost then
    if (events_.size() >= bound_) {
        dropped_ = events_.size() + 1;
        events_.clear();
        overflowed_ = true;
        return false;
    }
    events_.push_back(event_line);
    return true;
}

void SseQueue::take(std::string& out) {
    if (overflowed_) {
        if (!overflow_taken_) {
            out += sse_message(overflow_event_line(dropped_));
            overflow_taken_ = true;
        }
        return;
    }
    for (const auto& e : events_)
        out += sse_message(*e);
    events_.clear();
}

} // namespace cbd
