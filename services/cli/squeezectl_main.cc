// squeezectl: the command line of Squeeze.
#include <cstring>
#include <iostream>

#include "services/cli/commands.h"
#ifdef SQUEEZE_CLI_WITH_TORCH
#include "services/worker/task_process.h"
#endif

namespace {

constexpr char kUsage[] = R"(usage: squeezectl COMMAND [flags]

commands:
  inspect DIR [--json]                 config and tensor table of a model directory
  eval --model DIR --data FILE [--json] [--window N] [--stride N] [--batch-size N]
       [--device cpu|cuda] [--dtype float32|bfloat16]
                                       perplexity (overall and per category), size, parameters,
                                       tokens/s
  compress --model DIR --data FILE [--method rtn|gptq|awq --calibration FILE] [--out DIR]
           [--bits N] [--group-size N] [--sym] [--format gptq|awq_gemm|compressed_tensors]
           [--activations none|dynamic|static] [--smoothquant-alpha A]
           [--average-bits B | --max-size-bytes N] [--mixed-bits 2,3,4,8] [--state-dir DIR]
           [--device D] [--json]
                                       quantization as a job (evaluate, quantize, evaluate) on
                                       the embedded service, with a before/after table
  generate --model DIR --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-p P]
           [--seed S] [--device cpu|cuda] [--dtype float32|bfloat16] [--json]
                                       continues the prompt (greedy at temperature 0), with a
                                       key/value cache; dense and GPTQ models alike
  train --data FILE --out DIR [--eval FILE] [--steps N] ...
                                       trains a byte-level example model (see README)

service (coordinator from --coordinator HOST:PORT or SQUEEZE_COORDINATOR; credentials from
--token, --tls-ca, --tls-cert, --tls-key or SQUEEZE_TOKEN, SQUEEZE_TLS_CA, SQUEEZE_TLS_CERT,
SQUEEZE_TLS_KEY):
  run RECIPE [--output DIR] [--state-dir DIR] [--device cpu|cuda] [--json]
                                       runs a job to the end with live progress and prints its
                                       report; without a coordinator, starts an embedded one
  submit RECIPE [--request-id ID] [--tenant T] [--priority N] [--store ROOT] [--wait] [--json]
                                       with --store (or SQUEEZE_STORE: the coordinator's store
                                       root), uploads the recipe's local data files there first
  watch JOB [--json]                   live progress of a job until it finishes
  get JOB [--json]
  list [--state S] [--tenant T] [--page-size N] [--page-token T] [--json]
  cancel JOB [--json]
  artifacts JOB [--download DIR] [--json]
  store-put DIR URI [--store ROOT] [--json]
                                       stores a model directory as an artifact (s3://bucket/path),
                                       usable as a recipe's model; blobs under ROOT/blobs
  hash-token [--token-file F] < TOKEN  prints the digest of a bearer token (from stdin or a file)
  store-gc --store URI [--grace-hours H] [--json]
                                       deletes blobs no manifest references (older than H hours)
  store-rm URI [--store ROOT] [--json] deletes an artifact (an uploaded data file, an old
                                       output); store-gc then frees its blobs
)";

}  // namespace

int main(int argc, char** argv) {
  using namespace squeeze::cli;
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "help") == 0) {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
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
  std::cerr << "squeezectl: unknown command \"" << command << "\" (see squeezectl --help)\n";
  return 2;
}
