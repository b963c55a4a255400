// The load generator: C connections to a Unix socket, each keeping P
// operations in flight, one epoll thread. The same engine drives cbd, Redis
// and the floor; only the Protocol differs.
#pragma once

#include "bench/histogram.hpp"
#include "bench/protocols.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace cbbench {

struct LoadOptions {
    std::string socket;
    int connections = 50;
    int pipeline = 1;
    double seconds = 5;           // used when requests == 0
    std::uint64_t requests = 0;   // stop after this many operations (0: run for `seconds`)
    std::uint64_t keys = 1000;    // keys api-0 ... api-(keys-1)
    bool sequential_keys = false; // each key in turn (to fill a store), not at random
    std::vector<MixEntry> mix{{OpKind::Get, 100}};
};

struct LoadResult {
    std::uint64_t ops = 0;    // operations completed without error
    std::uint64_t errors = 0; // error replies
    double seconds = 0;
    Histogram latency; // per operation, in µs
};

// Throws std::runtime_error when it cannot connect or the server misbehaves.
LoadResult run_load(const LoadOptions& options, Protocol& protocol);

} // namespace cbbench
