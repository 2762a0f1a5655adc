// squeezectl's subcommands. Each takes the arguments after its name and returns the exit code:
// 0 success, 2 bad usage or input (one line on stderr), 1 any other failure.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/base/flags.h"
#include "services/cli/job_client.h"

namespace squeeze::cli {

using Args = std::vector<std::string>;

// Prints "squeezectl: <message>" on stderr and returns the exit code for `status`.
int Fail(const absl::Status& status);

// Adds --coordinator, --token, --tls-ca, --tls-cert, --tls-key and --json.
Flags& ClientFlags(Flags& flags);
// A client for the coordinator at `address` with the credentials of those flags (or of
// SQUEEZE_TOKEN, SQUEEZE_TLS_CA, SQUEEZE_TLS_CERT, SQUEEZE_TLS_KEY).
absl::StatusOr<std::unique_ptr<JobClient>> Connect(const Flags& flags, const std::string& address);

int RunInspect(const Args& args);
int RunHashToken(const Args& args);
int RunSubmit(const Args& args);
int RunWatch(const Args& args);
int RunGet(const Args& args);
int RunList(const Args& args);
int RunCancel(const Args& args);
int RunArtifacts(const Args& args);
int RunHealth(const Args& args);
int RunStoreGc(const Args& args);
int RunStorePut(const Args& args);
int RunStoreRm(const Args& args);
#ifdef SQUEEZE_CLI_WITH_TORCH
int RunEval(const Args& args);
int RunCompress(const Args& args);
int RunTrain(const Args& args);
int RunRun(const Args& args);
int RunGenerate(const Args& args);
#endif

}  // namespace squeeze::cli
