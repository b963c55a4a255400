// cbctl's text for people: how a pin reads on a terminal.
#include "cli/observe_commands.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

using cbctl::human_time;
using cbctl::pin_text;

namespace {

using Json = nlohmann::ordered_json;

constexpr std::int64_t kCliNow = 1'764'201'600'000;

Json pin_json(Json until, Json reason = "db migration") {
    return Json{{"state", "open"},
                {"until", std::move(until)},
                {"reason", std::move(reason)},
                {"by", {{"uid", 0}, {"pid", 4242}}}};
}

std::string time_left_text(std::int64_t ms) {
    const std::string text = pin_text(pin_json(kCliNow + ms), kCliNow);
    const auto open = text.find(" (in ");
    return open == std::string::npos ? text : text.substr(open + 5, text.find(')') - open - 5);
}

} // namespace

TEST_CASE("a pin reads as state, end, time left, who and why", "[cli]") {
    CHECK(pin_text(pin_json(kCliNow + 300'000), kCliNow) ==
          "open until " + human_time(kCliNow + 300'000) +
              " (in 5m) by uid 0 pid 4242: \"db migration\"");
    CHECK(pin_text(pin_json(nullptr, ""), kCliNow) == "open until unforced by uid 0 pid 4242");
    CHECK(pin_text(pin_json(kCliNow), kCliNow) ==
          "open until " + human_time(kCliNow) + " (due now) by uid 0 pid 4242: \"db migration\"");
}

TEST_CASE("the time left is its two largest units, rounded up to a second", "[cli]") {
    CHECK(time_left_text(500) == "1s");
    CHECK(time_left_text(42'000) == "42s");
    CHECK(time_left_text(299'000) == "4m 59s");
    CHECK(time_left_text(299'001) == "5m");
    CHECK(time_left_text(3'900'000) == "1h 5m");
    CHECK(time_left_text(90'061'000) == "1d 1h");
    CHECK(time_left_text(86'400'000) == "1d");
}

TEST_CASE("a pin's text cannot steer the terminal, nor a malformed pin stop cbctl", "[cli]") {
    CHECK(pin_text(pin_json(nullptr, "\x1b[2J"), kCliNow) ==
          "open until unforced by uid 0 pid 4242: \"\\u001b[2J\"");
    CHECK(pin_text(Json{{"state", 1}, {"until", "soon"}, {"reason", 2}, {"by", {{"uid", "x"}}}},
                   kCliNow) == "? until unforced");
    CHECK(pin_text(Json::object(), kCliNow) == "? until unforced");
}
