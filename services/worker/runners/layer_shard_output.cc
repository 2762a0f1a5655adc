#include "services/worker/runners/layer_shard_output.h"

#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "services/worker/runners/stage_io.h"

namespace squeeze::worker {

namespace fs = std::filesystem;

LayerShardOutput::LayerShardOutput(TaskContext& ctx, std::string stage)
    : ctx_(ctx),
      stage_(std::move(stage)),
      checkpoint_(ctx.lease().checkpoint_uri() + "/shards"),
      output_(ctx.lease().output_uri()) {
  auto done = ctx_.store().Files(checkpoint_);
  if (!done.ok()) return;  // nothing finished yet
  std::lock_guard<std::mutex> lock(mu_);
  for (const StoredFile& f : *done) {
    // model-000{i+1}-of-...: layer i.
    int64_t number = 0;
    if (f.name.rfind("model-", 0) == 0 && absl::SimpleAtoi(f.name.substr(6, 5), &number) &&
        number >= 1) {
      layer_shards_[number - 1] = f;
    } else {
      kept_[f.name] = f;
    }
  }
}

absl::StatusOr<bool> LayerShardOutput::FetchCheckpointFile(const std::string& name,
                                                           const std::string& path) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!kept_.count(name)) return false;
  }
  if (auto s = ctx_.store().FetchFile(checkpoint_, name, path); !s.ok()) return s;
  return true;
}

absl::StatusOr<StoredFile> LayerShardOutput::KeepInCheckpoint(const std::string& name,
                                                              const std::string& path) {
  auto stored = ctx_.store().PutFileBlob(checkpoint_, name, path, /*consume=*/false);
  if (!stored.ok()) return stored.status();
  std::lock_guard<std::mutex> lock(mu_);
  kept_[name] = *stored;
  if (auto s = PutCheckpointManifest(); !s.ok()) return s;
  return *stored;
}

absl::Status LayerShardOutput::AddOutputFile(const std::string& name, const std::string& path,
                                             bool consume) {
  auto stored = ctx_.store().PutFileBlob(output_, name, path, consume);
  if (!stored.ok()) return stored.status();
  std::lock_guard<std::mutex> lock(mu_);
  other_files_.push_back(*stored);
  return absl::OkStatus();
}

absl::Status LayerShardOutput::PutCheckpointManifest() {
  // The checkpoint names every finished shard, which also keeps them from garbage collection.
  std::vector<StoredFile> files;
  for (const auto& [i, f] : layer_shards_) files.push_back(f);
  for (const auto& [name, f] : kept_) files.push_back(f);
  ArtifactProvenance provenance = ctx_.provenance();
  provenance.stage = stage_;
  return ctx_.store().PutManifest(checkpoint_, files, provenance);
}

void LayerShardOutput::Attach(int64_t layers, StreamingQuantizeOptions& options) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    options.start_layer = 0;
    while (options.start_layer < layers && layer_shards_.count(options.start_layer))
      ++options.start_layer;
  }
  if (options.start_layer > 0) {
    ctx_.Log(absl::StrCat("resumed from checkpoint: ", options.start_layer, " of ", layers,
                          " layers already done"));
  }
  options.finished_shard = [this](int64_t layer) -> absl::StatusOr<std::string> {
    StoredFile f;
    {
      std::lock_guard<std::mutex> lock(mu_);
      f = layer_shards_.at(layer);
    }
    const fs::path dir = fs::path(ctx_.scratch_dir()) / "resume";
    fs::create_directories(dir);
    const std::string path = (dir / f.name).string();
    if (auto s = ctx_.store().FetchFile(checkpoint_, f.name, path); !s.ok()) return s;
    return path;
  };
  options.on_file = [this](int64_t layer, const std::string& path,
                           const std::string& name) -> absl::Status {
    auto stored = ctx_.store().PutFileBlob(output_, name, path, /*consume=*/true);
    if (!stored.ok()) return stored.status();
    std::lock_guard<std::mutex> lock(mu_);
    if (layer < 0) {
      other_files_.push_back(*stored);
      return absl::OkStatus();
    }
    layer_shards_[layer] = *stored;
    return PutCheckpointManifest();
  };
}

absl::StatusOr<std::vector<StoredFile>> LayerShardOutput::Commit(const std::string& model_dir) {
  for (const std::string& name : TokenizerFileNames()) {
    const fs::path source = fs::path(model_dir) / name;
    if (!fs::exists(source)) continue;
    if (auto s = AddOutputFile(name, source.string(), /*consume=*/false); !s.ok()) return s;
  }
  std::vector<StoredFile> files;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [i, f] : layer_shards_) files.push_back(f);
    files.insert(files.end(), other_files_.begin(), other_files_.end());
  }
  if (auto s = ctx_.store().PutManifest(output_, files, ctx_.provenance()); !s.ok()) return s;
  ctx_.store().Delete(ctx_.lease().checkpoint_uri()).IgnoreError();
  return files;
}

}  // namespace squeeze::worker
