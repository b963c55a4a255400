// FNV-1a, 64 bits: a fast, stable digest of a text (not a secure one), for
// names that must change whenever their text does (the Redis Functions
// library) and digests hosts compare (policies).
#pragma once

#include <cstdint>
#include <string_view>

namespace cbd {

inline constexpr std::uint64_t kFnv1aOffsetBasis = 14695981039346656037ull;

constexpr std::uint64_t fnv1a(std::string_view text, std::uint64_t basis = kFnv1aOffsetBasis) {
    std::uint64_t h = basis;
    for (const char c : text) {
        h ^= static_cast<unsigned char>(c);
        h *= 1099511628211ull;
    }
    return h;
}

} // namespace cbd
