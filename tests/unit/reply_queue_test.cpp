// The reply queue: replies leave in request order whatever order the
// backend answers in; it counts what it holds for the session's bound.
#include "daemon/dispatch/reply_queue.hpp"

#include <catch2/catch.hpp>

using namespace cbd;

TEST_CASE("replies ready at once leave together, in order", "[reply_queue]") {
    ReplyQueue q;
    q.ready_tail() += "a\n";
    q.ready_tail() += "b\n";
    CHECK(q.front_ready());
    CHECK(q.ready_bytes() == 4);
    std::string out;
    q.take_ready(out);
    CHECK(out == "a\nb\n");
    CHECK(q.empty());
    CHECK(q.ready_bytes() == 0);
}

TEST_CASE("a reply still to come holds back every later one", "[reply_queue]") {
    ReplyQueue q;
    int woken = 0;
    q.on_front_ready = [&] { ++woken; };
    q.ready_tail() += "1\n";
    const auto second = q.reserve();
    q.ready_tail() += "3\n";
    const auto fourth = q.reserve();
    q.ready_tail() += "5\n";
    CHECK(q.waiting() == 2);

    std::string out;
    q.take_ready(out);
    CHECK(out == "1\n"); // stops at the first slot still to come
    out.clear();

    // Answered out of order: the later one first changes nothing at the front.
    q.fill(fourth, "4\n");
    CHECK(woken == 0);
    CHECK_FALSE(q.front_ready());
    q.take_ready(out);
    CHECK(out.empty());

    q.fill(second, "2\n");
    CHECK(woken == 1);
    CHECK(q.waiting() == 0);
    q.take_ready(out);
    CHECK(out == "2\n3\n4\n5\n");
    CHECK(q.empty());
    CHECK(q.ready_bytes() == 0);
}

TEST_CASE("ready bytes count every ready reply not yet taken", "[reply_queue]") {
    ReplyQueue q;
    q.ready_tail() += "xx\n";
    const auto t = q.reserve();
    q.ready_tail() += "yyyy\n";
    CHECK(q.ready_bytes() == 3 + 5);
    q.fill(t, "z\n");
    CHECK(q.ready_bytes() == 3 + 5 + 2);
    std::string out;
    q.take_ready(out);
    CHECK(q.ready_bytes() == 0);
    CHECK(out == "xx\nz\nyyyy\n");
}

TEST_CASE("a second answer for a slot is dropped", "[reply_queue]") {
    ReplyQueue q;
    const auto t = q.reserve();
    q.fill(t, "first\n");
    q.fill(t, "second\n");
    std::string out;
    q.take_ready(out);
    CHECK(out == "first\n");
    q.fill(t, "late\n"); // after the slot was written: nothing to fill
    CHECK(q.empty());
    CHECK(q.waiting() == 0);
}

TEST_CASE("tickets stay valid as the front is taken", "[reply_queue]") {
    ReplyQueue q;
    std::vector<ReplyQueue::Ticket> tickets;
    for (int i = 0; i < 100; ++i)
        tickets.push_back(q.reserve());
    std::string out;
    for (int i = 0; i < 100; ++i) {
        q.fill(tickets[static_cast<std::size_t>(i)], std::to_string(i) + "\n");
        q.take_ready(out); // the front leaves as soon as it is ready
    }
    std::string expected;
    for (int i = 0; i < 100; ++i)
        expected += std::to_string(i) + "\n";
    CHECK(out == expected);
    CHECK(q.empty());
}

TEST_CASE("a slot counts its weight as waiting until filled", "[reply_queue]") {
    ReplyQueue q;
    const auto batch = q.reserve(100);
    const auto single = q.reserve();
    CHECK(q.waiting() == 101);
    q.fill(single, "b\n");
    CHECK(q.waiting() == 100);
    q.fill(batch, "a\n");
    CHECK(q.waiting() == 0);
    std::string out;
    q.take_ready(out);
    CHECK(out == "a\nb\n");
}
