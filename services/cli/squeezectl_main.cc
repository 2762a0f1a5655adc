// squeezectl: the command line of Squeeze.
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "common/base/flags.h"

#include "services/cli/commands.h"
#ifdef SQUEEZE_CLI_WITH_TORCH
#include "services/worker/task_process.h"
#endif

namespace {

// Each command's usage lines, as the overview lists them; `squeezectl COMMAND --help` prints one.
struct CommandUsage {
  const char* name;
  bool service;  // listed under the service commands
  const char* text;
};
constexpr CommandUsage kCommands[] = {
    {"inspect", false,
     R"(  inspect DIR [--json]                 config and tensor table of a model directory
)"},
    {"eval", false,
     R"(  eval --model DIR --data FILE [--json] [--window N] [--stride N] [--batch-size N]
       [--device cpu|cuda] [--dtype float32|bfloat16]
                                       perplexity (overall and per category), size, parameters,
                                       tokens/s
)"},
    {"compress", false,
     R"(  compress --model DIR --data FILE [--method rtn|gptq|awq --calibration FILE] [--out DIR]
           [--bits N] [--group-size N] [--sym | --asym] [--format gptq|awq_gemm|compressed_tensors]
           [--activations none|dynamic|static] [--smoothquant-alpha A]
           [--average-bits B | --max-size-bytes N] [--mixed-bits 2,3,4,8] [--state-dir DIR]
           [--device D] [--json]
                                       quantization as a job (evaluate, quantize, evaluate) on
                                       the embedded service, with a before/after table
)"},
    {"generate", false,
     R"(  generate --model DIR --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-p P]
           [--seed S] [--device cpu|cuda] [--dtype float32|bfloat16] [--json]
                                       continues the prompt (greedy at temperature 0), with a
                                       key/value cache; dense and GPTQ models alike
)"},
    {"train", false,
     R"(  train --data FILE --out DIR [--eval FILE] [--steps N] ...
                                       trains a byte-level example model (see README)
)"},
    {"run", true,
     R"(  run RECIPE [--output DIR] [--state-dir DIR] [--device cpu|cuda] [--json]
                                       runs a job to the end with live progress and prints its
                                       report; without a coordinator, starts an embedded one
)"},
    {"submit", true,
     R"(  submit RECIPE [--request-id ID] [--tenant T] [--priority N] [--store ROOT] [--wait] [--json]
                                       with --store (or SQUEEZE_STORE: the coordinator's store
                                       root), uploads the recipe's local model directory and
                                       data files there first (unchanged ones are found again)
)"},
    {"watch", true,
     R"(  watch JOB [--json]                   live progress of a job until it finishes
)"},
    {"get", true,
     R"(  get JOB [--json]
)"},
    {"list", true,
     R"(  list [--state S] [--tenant T] [--page-size N] [--page-token T] [--json]
)"},
    {"cancel", true,
     R"(  cancel JOB [--json]
)"},
    {"artifacts", true,
     R"(  artifacts JOB [--download DIR] [--json]
)"},
    {"health", true,
     R"(  health [--service NAME] [--timeout-ms N] [--json]
                                       the coordinator's gRPC health (the server, or one service:
                                       squeeze.v1.JobService, squeeze.v1.WorkerService); exit 0
                                       when SERVING, 1 otherwise: for probes and scripts
)"},
    {"store-put", true,
     R"(  store-put DIR URI [--store ROOT] [--json]
                                       stores a model directory as an artifact (s3://bucket/path),
                                       usable as a recipe's model; blobs under ROOT/blobs
)"},
    {"hash-token", true,
     R"(  hash-token [--token-file F] < TOKEN  prints the digest of a bearer token (from stdin or a file)
)"},
    {"store-gc", true,
     R"(  store-gc --store URI [--grace-hours H] [--json]
                                       deletes blobs no manifest references (older than H hours)
)"},
    {"store-rm", true,
     R"(  store-rm URI [--store ROOT] [--json] deletes an artifact (an uploaded data file, an old
                                       output); store-gc then frees its blobs
)"},
};

constexpr char kServiceHeader[] =
    R"(service (coordinator from --coordinator HOST:PORT or SQUEEZE_COORDINATOR; credentials from
--token, --tls-ca, --tls-cert, --tls-key or SQUEEZE_TOKEN, SQUEEZE_TLS_CA, SQUEEZE_TLS_CERT,
SQUEEZE_TLS_KEY):
)";

std::string Usage() {
  std::string out =
      "usage: squeezectl COMMAND [flags]   (squeezectl COMMAND --help: one command)\n\n";
  out += "commands:\n";
  for (const CommandUsage& c : kCommands)
    if (!c.service) out += c.text;
  out += "\n";
  out += kServiceHeader;
  for (const CommandUsage& c : kCommands)
    if (c.service) out += c.text;
  return out;
}

const CommandUsage* FindCommand(const std::string& name) {
  for (const CommandUsage& c : kCommands)
    if (name == c.name) return &c;
  return nullptr;
}

// "unknown command", with the nearest command when the name looks like a typo of one.
int UnknownCommand(const std::string& command) {
  std::vector<std::string> names;
  for (const CommandUsage& c : kCommands) names.emplace_back(c.name);
  const std::string near = squeeze::NearestName(command, names);
  std::cerr << "squeezectl: unknown command \"" << command << "\""
            << (near.empty() ? "" : " (did you mean \"" + near + "\"?)")
            << " (see squeezectl --help)\n";
  return 2;
}

bool AsksForHelp(int argc, char** argv) {
  for (int i = 2; i < argc; ++i)
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) return true;
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace squeeze::cli;
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      (std::strcmp(argv[1], "help") == 0 && argc == 2)) {
    std::cout << Usage();
    return argc < 2 ? 2 : 0;
  }
  // `squeezectl help COMMAND` and `squeezectl COMMAND --help`: that command's usage.
  const bool help = std::strcmp(argv[1], "help") == 0;
  const std::string command = help ? argv[2] : argv[1];
  if (help || AsksForHelp(argc, argv)) {
    const CommandUsage* c = FindCommand(command);
    if (c == nullptr) return UnknownCommand(command);
    std::cout << "usage: squeezectl " << (c->text + 2);
    return 0;
  }
#ifdef SQUEEZE_CLI_WITH_TORCH
  // The embedded worker of `squeezectl run` runs each task in a child process of this binary.
  if (command == "run-task") {
    return squeeze::worker::RunTaskProcessMain(0, squeeze::worker::kTaskEventFd);
  }
#endif
  const Args args(argv + 2, argv + argc);
  if (command == "inspect") return RunInspect(args);
  if (command == "submit") return RunSubmit(args);
  if (command == "watch") return RunWatch(args);
  if (command == "get") return RunGet(args);
  if (command == "list") return RunList(args);
  if (command == "cancel") return RunCancel(args);
  if (command == "artifacts") return RunArtifacts(args);
  if (command == "health") return RunHealth(args);
  if (command == "store-gc") return RunStoreGc(args);
  if (command == "store-put") return RunStorePut(args);
  if (command == "store-rm") return RunStoreRm(args);
  if (command == "hash-token") return RunHashToken(args);
#ifdef SQUEEZE_CLI_WITH_TORCH
  if (command == "eval") return RunEval(args);
  if (command == "compress") return RunCompress(args);
  if (command == "train") return RunTrain(args);
  if (command == "run") return RunRun(args);
  if (command == "generate") return RunGenerate(args);
#else
  // The client-only build (SQUEEZE_WITH_TORCH=OFF) has every service command but no local compute.
  if (command == "eval" || command == "compress" || command == "train" || command == "run" ||
      command == "generate") {
    std::cerr << "squeezectl: \"" << command
              << "\" computes locally and needs the build with libtorch; this is the client-only "
                 "squeezectl (submit the recipe to a coordinator with `squeezectl submit`)\n";
    return 2;
  }
#endif
  return UnknownCommand(command);
}
