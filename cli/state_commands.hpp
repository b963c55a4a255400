// cbctl's commands for moving state: export writes every circuit (with its
// policy override and pin) as JSON lines; import sends such lines back, to
// this daemon or another. Together they take backups while cbd runs and move
// state between hosts.
#pragma once

#include "cli/commands.hpp"

#include <string>

namespace cbctl {

// Pages through `export`, one record per line on stdout.
int run_export(const GlobalOptions& g, const std::string& prefix);

// Reads export lines from `input_fd`, pipelined as `import` requests. Errors
// go to stderr with their line number; a summary line ends stderr. Exits 1
// when any line failed.
int run_import(const GlobalOptions& g, int input_fd);

} // namespace cbctl
