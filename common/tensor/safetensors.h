// The safetensors format: an 8-byte little-endian header length, a JSON header that maps tensor
// names to {dtype, shape, data_offsets} (plus an optional "__metadata__" string map), then the
// raw little-endian tensor bytes. Reading memory-maps the file and validates every header entry
// against the file's real size before any tensor byte is touched, so a corrupt or lying file is
// an error naming the file and tensor, never an out-of-bounds read.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/tensor/dtype.h"

namespace squeeze {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t offset = 0;  // from the start of the data region
  uint64_t nbytes = 0;

  int64_t numel() const;
};

// A tensor inside a mapped file; `data` stays valid while the file object lives.
struct TensorView {
  const TensorInfo* info = nullptr;
  const uint8_t* data = nullptr;
};

// The parsed, validated header of a safetensors file.
struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in data-offset order
  std::map<std::string, std::string> metadata;
};

// Validates `json` as a safetensors header for a data region of `data_size` bytes. `source` names
// the file in errors. Exposed on its own so that ranged readers (object stores) can reuse it.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view json, uint64_t data_size,
                                                         absl::string_view source);

class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const TensorInfo* Find(absl::string_view name) const;
  // NotFound naming the file and tensor when absent.
  absl::StatusOr<TensorView> Get(absl::string_view name) const;

 private:
  SafetensorsFile() = default;

  std::string path_;
  SafetensorsHeader header_;
  std::map<std::string, size_t, std::less<>> index_;
  const uint8_t* map_ = nullptr;
  size_t map_size_ = 0;
  uint64_t data_start_ = 0;
};

// Collects tensors and writes one safetensors file. Tensors are written in the order added.
class SafetensorsWriter;
absl::Status WriteCheckpoint(const std::string& dir, const SafetensorsWriter& all,
                             uint64_t max_shard_bytes);

class SafetensorsWriter {
 public:
  void SetMetadata(std::string key, std::string value);
  // Copies the bytes. InvalidArgument if the name repeats or nbytes does not match dtype x shape.
  absl::Status Add(std::string name, DType dtype, std::vector<int64_t> shape, const void* data,
                   size_t nbytes);
  size_t size() const { return tensors_.size(); }
  uint64_t data_bytes() const { return data_bytes_; }
  std::vector<std::string> names() const;

  // The 8-byte length, JSON header and padding (to a multiple of 8 bytes), without the data.
  std::string SerializeHeader() const;
  // Writes to a temporary file beside `path`, syncs it and renames it into place, so a reader
  // never sees a half-written file under the final name.
  absl::Status WriteFile(const std::string& path) const;

 private:
  friend absl::Status WriteCheckpoint(const std::string&, const SafetensorsWriter&, uint64_t);
  struct Entry {
    TensorInfo info;
    std::string bytes;
  };
  std::vector<Entry> tensors_;
  std::map<std::string, std::string> metadata_;
  uint64_t data_bytes_ = 0;
};

// Writes a safetensors file a tensor at a time, holding none of them whole: the header first
// (from each tensor's name, dtype, shape and nbytes, in this order; offsets are assigned), then
// `produce(i, write)` is called for each tensor in turn and passes its bytes to `write` in as many
// pieces as it likes. Not atomic: for scratch files that are handed on once complete.
absl::Status WriteSafetensorsStreaming(
    const std::string& path, std::vector<TensorInfo> tensors,
    const std::map<std::string, std::string>& metadata,
    const std::function<
        absl::Status(size_t, const std::function<absl::Status(absl::string_view)>&)>& produce);

// A Hugging Face model directory's weights: `model.safetensors`, or the shards listed in
// `model.safetensors.index.json`. Shards are opened (and validated) when the directory is opened.
class CheckpointReader {
 public:
  static absl::StatusOr<std::unique_ptr<CheckpointReader>> Open(const std::string& dir);

  std::vector<std::string> names() const;  // sorted
  bool Contains(absl::string_view name) const { return where_.find(name) != where_.end(); }
  absl::StatusOr<TensorView> Get(absl::string_view name) const;
  // The file holding `name`, or "" when absent.
  std::string FileOf(absl::string_view name) const;
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t, std::less<>> where_;
  std::string dir_;
};

// Writes tensors as `model.safetensors`, or, when their bytes exceed `max_shard_bytes` (> 0),
// as `model-0000K-of-0000N.safetensors` shards plus `model.safetensors.index.json`.
absl::Status WriteCheckpoint(const std::string& dir, const SafetensorsWriter& all,
                             uint64_t max_shard_bytes = 0);

}  // namespace squeeze
