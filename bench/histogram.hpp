// Latency histogram for cbbench: log-linear buckets (about 1% wide) from
// 1 µs to over a minute, so percentiles cost no sorting and no memory per
// request.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

namespace cbbench {

class Histogram {
  public:
    void record(double micros) {
        if (micros < 1)
            micros = 1;
        auto index = static_cast<std::size_t>(std::log(micros) / kLogStep);
        if (index >= counts_.size())
            index = counts_.size() - 1;
        counts_[index] += 1;
        total_ += 1;
        if (micros > max_)
            max_ = micros;
    }

    // The value below which `fraction` of the samples fall.
    double percentile(double fraction) const {
        if (total_ == 0)
            return 0;
        const auto target =
            static_cast<std::uint64_t>(std::ceil(fraction * static_cast<double>(total_)));
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < counts_.size(); ++i) {
            seen += counts_[i];
            if (seen >= target)
                return std::exp(static_cast<double>(i + 1) * kLogStep);
        }
        return max_;
    }

    double max() const { return max_; }
    std::uint64_t count() const { return total_; }

  private:
    static constexpr double kLogStep = 0.01;   // ~1% per bucket
    std::array<std::uint64_t, 2000> counts_{}; // e^(2000*0.01) µs ≈ 8 minutes
    std::uint64_t total_ = 0;
    double max_ = 0;
};

} // namespace cbbench
