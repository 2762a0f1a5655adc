// squeezectl's subcommands. Each takes the arguments after its name and returns the exit code:
// 0 success, 2 bad usage or input (one line on stderr), 1 any other failure.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace squeeze::cli {

using Args = std::vector<std::string>;

// Prints "squeezectl: <message>" on stderr and returns the exit code for `status`.
int Fail(const absl::Status& status);

int RunInspect(const Args& args);
int RunSubmit(const Args& args);
int RunWatch(const Args& args);
int RunGet(const Args& args);
int RunList(const Args& args);
int RunCancel(const Args& args);
int RunArtifacts(const Args& args);
int RunStoreGc(const Args& args);
int RunStorePut(const Args& args);
#ifdef SQUEEZE_CLI_WITH_TORCH
int RunEval(const Args& args);
int RunCompress(const Args& args);
int RunTrain(const Args& args);
int RunRun(const Args& args);
#endif

}  // namespace squeeze::cli
