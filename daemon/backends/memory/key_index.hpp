// The store's keys in order, for `list`. The hash map answers lookups; this
// answers "the next N keys after K" without sorting anything at query time.
// It is a sorted sequence of small sorted blocks (a one-level B-tree): an
// insert or erase moves at most one block's pointers, a page read is a binary
// search and a walk, and each key costs one pointer of memory.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace cbd {

class KeyIndex {
  public:
    // `key` must stay valid until erased (the store's map nodes are stable).
    void insert(const std::string* key);
    void erase(std::string_view key);
    std::size_t size() const { return size_; }

    // Calls `visit(const std::string&)` for each key >= `from` (or > `from`
    // when `exclusive`), in order, until it returns false.
    template <typename Visit>
    void walk_from(std::string_view from, bool exclusive, Visit&& visit) const {
        auto [b, i] = lower_bound(from);
        for (; b < blocks_.size(); ++b, i = 0) {
            const auto& block = blocks_[b];
            for (; i < block.size(); ++i) {
                if (exclusive && *block[i] == from)
                    continue;
                if (!visit(*block[i]))
                    return;
            }
        }
    }

  private:
    static constexpr std::size_t kMaxBlock = 256;
    using Block = std::vector<const std::string*>;

    // Position of the first key >= `key`: (block, index); block ==
    // blocks_.size() when every key is smaller.
    std::pair<std::size_t, std::size_t> lower_bound(std::string_view key) const;

    std::vector<Block> blocks_;
    std::size_t size_ = 0;
};

} // namespace cbd
