// What the runners share: their inputs (the model, the calibration windows) placed from the
// store, their outputs stored, their gangs joined, and the memory figures of their reports.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
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

// The calibration windows [N, L] of a stage: the job's calibrate stage's when there is one, else
// sampled from data.calibration with the stage's calibration_samples, calibration_seq_len, seed.
absl::StatusOr<at::Tensor> CalibrationWindows(TaskContext& ctx, const std::string& model_dir,
                                              const LlamaConfig& config);

// Writes `files` (name -> contents) into a fresh scratch directory and stores it at `uri`.
absl::Status PutFiles(TaskContext& ctx, const std::string& name,
                      const std::map<std::string, std::string>& files, const std::string& uri);

// The task's gang (its lease's rank, world size and rendezvous), joined; nullptr for one rank.
absl::StatusOr<std::unique_ptr<DataParallel>> JoinGang(TaskContext& ctx);

// Writes `model` to `out_dir` as a Hugging Face directory in the dtype of `source_dir`'s config
// (bfloat16 or float32), with the source's tokenizer beside it.
absl::Status SaveModelLike(const LlamaModel& model, const std::string& source_dir,
                           const std::string& out_dir);

// Digest of a model directory's content (config.json, weights, tokenizer), for cache keys.
absl::StatusOr<std::string> ModelDigest(const std::string& dir);

}  // namespace squeeze::worker
