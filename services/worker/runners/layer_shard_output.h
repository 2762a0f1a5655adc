// The store side of a model written layer by layer (the streaming quantizer's shards, quantized
// or pruned): each finished shard goes into the output as soon as it is written (moved, not
// copied, on the file backend), and the task's checkpoint is a manifest naming the shards done so
// far, so that a retried task resumes after the last of them. The quantize and prune runners
// share it.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/compress/streaming_quantizer.h"
#include "common/store/artifact_store.h"
#include "services/worker/task_runner.h"

namespace squeeze::worker {

class LayerShardOutput {
 public:
  // Reads what an earlier attempt of the task finished from its checkpoint. `stage` names the
  // checkpoint's provenance ("quantize-checkpoint").
  LayerShardOutput(TaskContext& ctx, std::string stage);
  LayerShardOutput(const LayerShardOutput&) = delete;
  LayerShardOutput& operator=(const LayerShardOutput&) = delete;

  // Fetches `name`, a file other than a shard that an earlier attempt kept in the checkpoint, to
  // the local `path`; false when the checkpoint has none.
  absl::StatusOr<bool> FetchCheckpointFile(const std::string& name, const std::string& path);
  // Stores the local file `path` as `name` in the checkpoint, listed there from now on.
  absl::StatusOr<StoredFile> KeepInCheckpoint(const std::string& name, const std::string& path);
  // Stores the local file `path` as `name` in the output (a file that is not a layer's shard).
  absl::Status AddOutputFile(const std::string& name, const std::string& path, bool consume);

  // Sets `options`' start_layer (the first layer of `layers` not finished), finished_shard (the
  // finished shards fetched under the scratch directory) and on_file (into the output, then the
  // checkpoint's manifest). The options' callbacks use this object: it must outlive the run.
  void Attach(int64_t layers, StreamingQuantizeOptions& options);

  // After the run (rank 0): the source model's tokenizer files from `model_dir`, then the
  // output's manifest; the checkpoint, which has served its purpose, is deleted. Returns the
  // output's files.
  absl::StatusOr<std::vector<StoredFile>> Commit(const std::string& model_dir);

 private:
  absl::Status PutCheckpointManifest() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  TaskContext& ctx_;
  const std::string stage_;
  const std::string checkpoint_;  // the checkpoint's uri
  const std::string output_;      // the output's uri
  mutable std::mutex mu_;         // on_file runs on the writer thread
  std::map<int64_t, StoredFile> layer_shards_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, StoredFile> kept_ ABSL_GUARDED_BY(mu_);  // in the checkpoint, by name
  std::vector<StoredFile> other_files_ ABSL_GUARDED_BY(mu_);     // in the output
};

}  // namespace squeeze::worker
