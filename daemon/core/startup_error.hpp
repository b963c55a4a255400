#pragma once

#include <stdexcept>

namespace cbd {

// A reason cbd cannot start; main() prints it and exits non-zero.
struct StartupError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

} // namespace cbd
