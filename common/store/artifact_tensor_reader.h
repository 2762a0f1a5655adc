// Tensors of a safetensors model in the store, read by range: each shard's header once (validated
// against the shard's size), then only the bytes of the tensors asked for. A worker that needs a
// few layers of a 10 GB model fetches those layers, not the model.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/store/artifact_store.h"
#include "common/tensor/safetensors.h"

namespace squeeze {

class ArtifactTensorReader {
 public:
  // Reads the shard list (model.safetensors.index.json, or the single model.safetensors) and every
  // shard's header. Errors name the artifact and shard.
  static absl::StatusOr<std::unique_ptr<ArtifactTensorReader>> Open(ArtifactStore& store,
                                                                    const std::string& uri);

  struct Entry {
    std::string shard;
    TensorInfo info;
    uint64_t data_start = 0;  // where the shard's data region begins
  };
  const std::map<std::string, Entry>& tensors() const { return tensors_; }
  // The raw little-endian bytes of one tensor, in one ranged read.
  absl::StatusOr<std::string> Read(const std::string& name);
  // Writes the tensors whose names start with one of `prefixes` into a safetensors file at `path`;
  // returns how many.
  absl::StatusOr<int> WriteSubset(const std::vector<std::string>& prefixes,
                                  const std::string& path);
  // Bytes fetched from the store so far, headers included.
  int64_t bytes_read() const { return bytes_read_; }

 private:
  ArtifactTensorReader(ArtifactStore& store, std::string uri)
      : store_(store), uri_(std::move(uri)) {}
  absl::Status ReadShardHeader(const std::string& shard);

  ArtifactStore& store_;
  const std::string uri_;
  std::map<std::string, Entry> tensors_;
  int64_t bytes_read_ = 0;
};

}  // namespace squeeze
