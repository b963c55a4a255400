// KeyIndex against std::set, and the store's list paging on top of it.
#include "daemon/backends/memory/key_index.hpp"
#include "daemon/backends/memory/memory_store.hpp"

#include <catch2/catch.hpp>
#include <deque>
#include <random>
#include <set>

using namespace cbd;

namespace {

std::vector<std::string> walk(const KeyIndex& index, std::string_view from, bool exclusive,
                              std::size_t max = SIZE_MAX) {
    std::vector<std::string> out;
    index.walk_from(from, exclusive, [&](const std::string& k) {
        out.push_back(k);
        return out.size() < max;
    });
    return out;
}

} // namespace

TEST_CASE("KeyIndex keeps keys in order through random inserts and erases", "[key_index]") {
    std::mt19937 rng(12345);
    std::deque<std::string> storage; // stable addresses, as the store's map nodes are
    std::set<std::string> model;
    KeyIndex index;
    for (int step = 0; step < 20000; ++step) {
        std::string key = "k" + std::to_string(rng() % 5000);
        if (rng() % 3 != 0) {
            if (model.insert(key).second) {
                storage.push_back(key);
                index.insert(&storage.back());
            }
        } else if (model.erase(key)) {
            index.erase(key);
        }
    }
    REQUIRE(index.size() == model.size());
    CHECK(walk(index, "", false) == std::vector<std::string>(model.begin(), model.end()));

    // From the middle, inclusive and exclusive, and from a key not present.
    const std::string mid = *std::next(model.begin(), static_cast<long>(model.size() / 2));
    auto inclusive = walk(index, mid, false, 3);
    auto exclusive = walk(index, mid, true, 3);
    CHECK(inclusive.front() == mid);
    CHECK(exclusive.front() == *std::next(model.find(mid)));
    CHECK(walk(index, "k2500x", false, 1).front() == *model.lower_bound("k2500x"));
    CHECK(walk(index, "z", false).empty());
    index.erase("not-there"); // no effect
    CHECK(index.size() == model.size());
}

TEST_CASE("list returns every circuit exactly once, page by page", "[key_index]") {
    ManualClock clock{1'764'201'600'000};
    MemoryCircuitStore store{clock, 200'000};
    std::vector<std::string> keys;
    for (int i = 0; i < 100'000; ++i)
        keys.push_back("api-" + std::to_string(i));
    for (const auto& k : keys)
        store.get(k);
    std::sort(keys.begin(), keys.end());

    std::vector<std::string> seen;
    ListQuery q;
    q.limit = 777;
    for (;;) {
        auto page = store.list(q);
        for (const auto& e : page.circuits)
            seen.push_back(e.key);
        if (page.next.empty())
            break;
        q.after = page.next;
    }
    CHECK(seen == keys);
}

TEST_CASE("a sparse state filter is paged in bounded scans", "[key_index]") {
    ManualClock clock{1'764'201'600'000};
    MemoryCircuitStore store{clock, 300'000};
    for (int i = 0; i < 250'000; ++i)
        store.get("k" + std::to_string(1'000'000 + i));
    store.transition("k1249999", State::Open, {}); // the very last key
    store.transition("k1000000", State::Open, {}); // the first

    ListQuery q;
    q.state = State::Open;
    std::vector<std::string> seen;
    int pages = 0;
    for (;;) {
        auto page = store.list(q);
        ++pages;
        for (const auto& e : page.circuits)
            seen.push_back(e.key);
        if (page.next.empty())
            break;
        q.after = page.next;
    }
    CHECK(seen == std::vector<std::string>{"k1000000", "k1249999"});
    CHECK(pages >= 3); // 250,000 keys at most 100,000 examined per page
}
