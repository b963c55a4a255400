# Writes OUTPUT, a C++ source defining cbd::dashboard_html() as the bytes of
# INPUT. Run as `cmake -DINPUT=... -DOUTPUT=... -P embed.cmake` at build time,
# so editing the page rebuilds the daemon. The bytes go out as a list of hex
# character literals: no raw-string delimiter can clash with the page, and no
# compiler limit on string literal length applies.
if(NOT INPUT OR NOT OUTPUT)
  message(FATAL_ERROR "embed.cmake needs -DINPUT=file -DOUTPUT=file.cpp")
endif()
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" hex_length)
math(EXPR byte_count "${hex_length} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," bytes "${hex}")
# One line per 32 bytes keeps the generated file readable in a diff.
string(REGEX REPLACE "(('[^']+',){32})" "\\1\n    " bytes "${bytes}")
set(content "// Generated from ${INPUT} by embed.cmake; do not edit.
#include \"daemon/http/http_dashboard.hpp\"

namespace cbd {
namespace {
constexpr char kDashboardBytes[] = {
    ${bytes}
};
} // namespace

std::string_view dashboard_html() { return {kDashboardBytes, ${byte_count}}; }

} // namespace cbd
")
# Unchanged output keeps its timestamp, so nothing recompiles for nothing.
file(WRITE "${OUTPUT}.tmp" "${content}")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
