// KeyIndex (see key_index.hpp).
#include "daemon/backends/memory/key_index.hpp"

#include <algorithm>

namespace cbd {

namespace {
bool key_less(const std::string* a, std::string_view b) {
    return std::string_view(*a) < b;
}
} // namespace

std::pair<std::size_t, std::size_t> KeyIndex::lower_bound(std::string_view key) const {
    // The first block whose last key is >= key holds the position.
    auto block = std::lower_bound(
        blocks_.begin(), blocks_.end(), key,
        [](const Block& b, std::string_view k) { return std::string_view(*b.back()) < k; });
    if (block == blocks_.end())
        return {blocks_.size(), 0};
    auto pos = std::lower_bound(block->begin(), block->end(), key, key_less);
    return {static_cast<std::size_t>(block - blocks_.begin()),
            static_cast<std::size_t>(pos - block->begin())};
}

void KeyIndex::insert(const std::string* key) {
    ++size_;
    if (blocks_.empty()) {
        blocks_.emplace_back().reserve(kMaxBlock + 1);
        blocks_.back().push_back(key);
        return;
    }
    auto [b, i] = lower_bound(*key);
    if (b == blocks_.size()) { // larger than every key: append to the last block
        b = blocks_.size() - 1;
        i = blocks_[b].size();
    }
    Block& block = blocks_[b];
    block.insert(block.begin() + static_cast<std::ptrdiff_t>(i), key);
    if (block.size() > kMaxBlock) {
        // Every block is allocated once at its full size, so that growing
        // never doubles a block's capacity behind our back.
        Block upper;
        upper.reserve(kMaxBlock + 1);
        upper.assign(block.begin() + kMaxBlock / 2, block.end());
        block.resize(kMaxBlock / 2);
        blocks_.insert(blocks_.begin() + static_cast<std::ptrdiff_t>(b) + 1, std::move(upper));
    }
}

void KeyIndex::erase(std::string_view key) {
    auto [b, i] = lower_bound(key);
    if (b == blocks_.size() || *blocks_[b][i] != key)
        return;
    Block& block = blocks_[b];
    block.erase(block.begin() + static_cast<std::ptrdiff_t>(i));
    --size_;
    if (block.empty())
        blocks_.erase(blocks_.begin() + static_cast<std::ptrdiff_t>(b));
}

} // namespace cbd
