// The pure parts of the HTTP listener (see http_request.hpp).
#include "daemon/http/http_request.hpp"

#include "daemon/dispatch/circuit_json.hpp"

#include <algorithm>
#include <array>
#include <cctype>
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

// RFC 9110's tchar: what a method or a field name is made of.
bool is_tchar(char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar);
}

// A field value's bytes: visible ASCII, space, tab and obs-text; never a
// control character (NUL, a lone CR) or DEL.
bool is_field_value(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) {
        const auto b = static_cast<unsigned char>(c);
        return b == '\t' || (b >= 0x20 && b != 0x7f);
    });
}

// uri-host [":" port] of RFC 3986: nothing a second host could hide in.
bool is_host_value(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               std::string_view("-._~%!$&'()*+,;=:[]").find(c) != std::string_view::npos;
    });
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) ==
                      std::tolower(static_cast<unsigned char>(y));
           });
}

std::string_view trim_ows(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

HttpRefusal make_refusal(unsigned status, std::string reason) {
    return HttpRefusal{status, std::move(reason)};
}

// "HTTP/1.1" -> the minor version; a 505 for another major version, a 400
// for anything that is no HTTP version.
std::optional<HttpRefusal> parse_version(std::string_view v, unsigned& minor) {
    constexpr std::string_view kName = "HTTP/";
    if (!v.starts_with(kName))
        return make_refusal(400, "the request line does not end in an HTTP version");
    v.remove_prefix(kName.size());
    const auto dot = v.find('.');
    const std::string_view major = v.substr(0, dot);
    const std::string_view minor_text =
        dot == std::string_view::npos ? std::string_view() : v.substr(dot + 1);
    const auto digits = [](std::string_view d) {
        return !d.empty() &&
               std::all_of(d.begin(), d.end(), [](char c) { return c >= '0' && c <= '9'; });
    };
    if (!digits(major) || (dot != std::string_view::npos && !digits(minor_text)))
        return make_refusal(400, "the request line does not end in an HTTP version");
    if (major != "1")
        return make_refusal(505, "only HTTP/1.0 and HTTP/1.1 are served here");
    if (minor_text.size() != 1)
        return make_refusal(400, "the request line does not end in an HTTP version");
    minor = static_cast<unsigned>(minor_text[0] - '0');
    return std::nullopt;
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

std::optional<HttpRefusal> parse_http_head(std::string_view text, HttpRequestHead& head) {
    head = HttpRequestHead{};
    const auto line_end = text.find("\r\n");
    const std::string_view request_line = text.substr(0, line_end);
    // method SP request-target SP HTTP-version, one space each.
    const auto sp1 = request_line.find(' ');
    const auto sp2 = sp1 == std::string_view::npos ? sp1 : request_line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos)
        return make_refusal(400, "the request line is not METHOD TARGET HTTP/1.1");
    const std::string_view method = request_line.substr(0, sp1);
    const std::string_view target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string_view version = request_line.substr(sp2 + 1);
    if (!is_token(method))
        return make_refusal(400, "the request line does not start with a method");
    if (auto bad = parse_version(version, head.minor_version))
        return bad; // a 505 for HTTP/2 (its preface is "PRI * HTTP/2.0") before the target
    if (target.empty() ||
        !std::all_of(target.begin(), target.end(), [](char c) { return c > 0x20 && c < 0x7f; }))
        return make_refusal(400, "the request target is empty or holds a space, a control "
                                 "character or a byte that is not ASCII");
    head.method = method;
    head.target = target;

    std::size_t hosts = 0;
    std::optional<std::uint64_t> content_length;
    bool transfer_encoding = false;
    bool close = false;
    std::string_view fields =
        line_end == std::string_view::npos ? std::string_view() : text.substr(line_end + 2);
    while (!fields.empty()) {
        const auto end = fields.find("\r\n");
        const std::string_view line = fields.substr(0, end);
        fields = end == std::string_view::npos ? std::string_view() : fields.substr(end + 2);
        if (line.empty())
            break; // the blank line that ends the head
        if (line.front() == ' ' || line.front() == '\t')
            return make_refusal(400, "a folded header field (obsolete line folding is not served)");
        const auto colon = line.find(':');
        if (colon == std::string_view::npos || !is_token(line.substr(0, colon)))
            return make_refusal(400,
                                "a header field without a name and a colon (no space before it)");
        const std::string_view name = line.substr(0, colon);
        const std::string_view value = trim_ows(line.substr(colon + 1));
        if (!is_field_value(value))
            return make_refusal(400, "a control character in header field " + std::string(name));
        if (iequals(name, "host")) {
            if (++hosts > 1)
                return make_refusal(400, "more than one Host header field");
            if (!is_host_value(value))
                return make_refusal(400, "the Host header field is not a host and port");
            head.host = value;
        } else if (iequals(name, "content-length")) {
            std::uint64_t length = 0;
            const auto [ptr, ec] =
                std::from_chars(value.data(), value.data() + value.size(), length);
            if (content_length || value.empty() || ec != std::errc() ||
                ptr != value.data() + value.size())
                return make_refusal(400, "a Content-Length that is not one decimal number");
            content_length = length;
        } else if (iequals(name, "transfer-encoding")) {
            transfer_encoding = true;
        } else if (iequals(name, "connection")) {
            std::string_view tokens = value;
            while (!tokens.empty()) {
                const auto comma = tokens.find(',');
                close = close || iequals(trim_ows(tokens.substr(0, comma)), "close");
                tokens =
                    comma == std::string_view::npos ? std::string_view() : tokens.substr(comma + 1);
            }
        }
    }
    // RFC 9112, 3.2: a 400 for an HTTP/1.1 request without Host, and for
    // any with more than one (above).
    if (hosts == 0 && head.minor_version >= 1)
        return make_refusal(400, "an HTTP/1.1 request must have a Host header field");
    if (transfer_encoding && content_length)
        return make_refusal(400, "both Transfer-Encoding and Content-Length");
    if (head.method != "GET" && head.method != "HEAD")
        return make_refusal(405, "this listener is read-only: only GET and HEAD are served");
    if (transfer_encoding || content_length.value_or(0) > 0)
        return make_refusal(413, "this listener takes no request body");
    head.keep_alive = head.minor_version >= 1 && !close;
    return std::nullopt;
}

HttpHeadReader::State HttpHeadReader::refuse(unsigned status, std::string reason) {
    refusal_ = make_refusal(status, std::move(reason));
    state_ = State::Refused;
    return state_;
}

HttpHeadReader::State HttpHeadReader::feed(std::string_view bytes) {
    if (state_ == State::Refused)
        return state_; // the connection closes: nothing more is read
    buffer_.append(bytes);
    if (state_ == State::Complete)
        return state_; // a pipelined request, for next()
    return scan();
}

HttpHeadReader::State HttpHeadReader::next() {
    if (state_ != State::Complete)
        return state_;
    buffer_.erase(0, head_end_);
    scanned_ = 0;
    line_start_ = 0;
    head_start_ = 0;
    head_end_ = 0;
    in_request_line_ = true;
    method_ended_ = false;
    head_ = HttpRequestHead{};
    state_ = State::Empty;
    return scan();
}

HttpHeadReader::State HttpHeadReader::scan() {
    for (; scanned_ < buffer_.size(); ++scanned_) {
        if (scanned_ >= kMaxHttpHeadBytes)
            return in_request_line_ ? refuse(414, "request line longer than " +
                                                      std::to_string(kMaxHttpHeadBytes) + " bytes")
                                    : refuse(431, "request head longer than " +
                                                      std::to_string(kMaxHttpHeadBytes) + " bytes");
        const char c = buffer_[scanned_];
        const bool after_cr = scanned_ > line_start_ && buffer_[scanned_ - 1] == '\r';
        if (c != '\n') {
            if (after_cr)
                return refuse(400, "a bare CR in the request head (lines end in CRLF)");
            // A first line that cannot become a request line is refused at
            // once: a method is a token, and it comes first.
            if (in_request_line_ && !method_ended_ && c != '\r') {
                if (c == ' ' && scanned_ > line_start_)
                    method_ended_ = true;
                else if (!is_tchar(c))
                    return refuse(400, "not an HTTP request");
            }
            continue;
        }
        if (!after_cr)
            return refuse(400, "a bare LF in the request head (lines end in CRLF)");
        const bool blank = scanned_ == line_start_ + 1;
        line_start_ = scanned_ + 1;
        if (in_request_line_) {
            if (blank)
                head_start_ = line_start_; // an empty line before the request line is ignored
            else
                in_request_line_ = false;
        } else if (blank) {
            head_end_ = scanned_ + 1;
            ++scanned_;
            const auto text =
                std::string_view(buffer_).substr(head_start_, head_end_ - head_start_);
            if (auto refused = parse_http_head(text, head_))
                return refuse(refused->status, std::move(refused->reason));
            state_ = State::Complete;
            return state_;
        }
    }
    state_ = buffer_.empty() ? State::Empty : State::Partial;
    return state_;
}

std::string_view http_reason(unsigned status) {
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 421:
        return "Misdirected Request";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

std::string serialize_http_response(const HttpResponse& response) {
    std::string out;
    out.reserve(256 + (response.head_only ? 0 : response.body.size()));
    out += "HTTP/1.1 " + std::to_string(response.status) + " ";
    out += http_reason(response.status);
    out += "\r\nServer: cbd\r\nContent-Type: ";
    out += response.content_type;
    out += "\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n";
    for (const auto& [name, value] : response.fields) {
        out += name;
        out += ": ";
        out += value;
        out += "\r\n";
    }
    out += "Content-Length: " + std::to_string(response.body.size()) + "\r\n";
    if (!response.keep_alive)
        out += "Connection: close\r\n";
    out += "\r\n";
    if (!response.head_only)
        out += response.body;
    return out;
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

std::optional<bool> metrics_per_circuit(const HttpTarget& target, std::string& error) {
    const std::string* v = target.param("perCircuit");
    if (!v || *v == "false" || *v == "0")
        return false;
    if (*v == "true" || *v == "1")
        return true;
    error = "perCircuit must be true or false";
    return std::nullopt;
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
