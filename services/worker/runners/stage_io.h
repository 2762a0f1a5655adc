// What the runners share: their inputs (the model, the calibration windows) placed from the
// store, their outputs stored, their gangs joined, and the memory figures of their reports.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/compress/gptq.h"
#include "common/compress/prune.h"
#include "common/model/llama_config.h"
#include "common/model/llama_model.h"
#include "common/train/data_parallel.h"
#include "services/worker/task_runner.h"

namespace squeeze::worker {

bool device_is_cuda(const at::Device& d);
// Peak resident memory of this (the task's) process.
int64_t PeakHostMemoryBytes();
void ResetPeakDeviceMemory(const at::Device& device);
int64_t PeakDeviceMemoryBytes(const at::Device& device);

// The lease's "model" input, placed (verified) under the task's scratch directory.
absl::StatusOr<std::string> InputModel(TaskContext& ctx);

// A local path holding the job's data file `uri` (data.calibration, ...): a local file as it is,
// a file uploaded to the store fetched and verified. Errors name `field`.
absl::StatusOr<std::string> DataFile(TaskContext& ctx, const std::string& uri,
                                     const std::string& field);

// The calibration windows [N, L] of a stage: the job's calibrate stage's when there is one, else
// sampled from data.calibration as `sample` says.
absl::StatusOr<at::Tensor> CalibrationWindows(TaskContext& ctx, const std::string& model_dir,
                                              const LlamaConfig& config,
                                              const v1::CalibrationSample& sample);

// InvalidArgument unless the lease carries options of stage kind `expected`: a lease is never
// run with options meant for another runner, or with none.
absl::Status ExpectStage(const TaskContext& ctx, v1::StageOptions::StageCase expected);

// A prune target's method and pattern, with the names recipes and reports use; InvalidArgument
// for a value this worker does not know (a newer coordinator's), never a silent default.
struct PruneChoice {
  PruneMethod method;
  PrunePattern pattern;
  std::string method_name;   // "magnitude", "wanda"
  std::string pattern_name;  // "unstructured", "2:4", "channels", "heads"
};
absl::StatusOr<PruneChoice> PruneChoiceOf(const v1::PruneTarget& target);

// Writes `files` (name -> contents) into a fresh scratch directory and stores it at `uri`.
absl::Status PutFiles(TaskContext& ctx, const std::string& name,
                      const std::map<std::string, std::string>& files, const std::string& uri);

// The task's gang (its lease's rank, world size and rendezvous), joined; nullptr for one rank.
absl::StatusOr<std::unique_ptr<DataParallel>> JoinGang(TaskContext& ctx);

// The files of a Hugging Face model directory that are not its weights or config but travel
// with them: the tokenizer's and the generation defaults.
const std::vector<std::string>& TokenizerFileNames();
// Copies those of the source model into `out_dir`.
absl::Status CopyTokenizerFiles(const std::string& source_dir, const std::string& out_dir);

// Writes `model` to `out_dir` as a Hugging Face directory in the dtype of `source_dir`'s config
// (bfloat16 or float32), with the source's tokenizer beside it.
absl::Status SaveModelLike(const LlamaModel& model, const std::string& source_dir,
                           const std::string& out_dir);

// Digest of a model directory's content (config.json, weights, tokenizer), for cache keys.
absl::StatusOr<std::string> ModelDigest(const std::string& dir);

}  // namespace squeeze::worker
