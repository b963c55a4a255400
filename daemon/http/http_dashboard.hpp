// The dashboard page served at / by the HTTP listener: daemon/http/dashboard/
// index.html (its CSS and JS inline), embedded in the binary at build time
// by daemon/http/dashboard/embed.cmake, so it works on an air-gapped host.
#pragma once

#include <string_view>

namespace cbd {

std::string_view dashboard_html();

} // namespace cbd
