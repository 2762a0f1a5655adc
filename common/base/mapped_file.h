// A read-only memory map of a whole file: large files are hashed and uploaded straight from the
// page cache, never read into a buffer.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace squeeze {

class MappedFile {
 public:
  // NotFound naming `path` when it cannot be opened.
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  absl::string_view view() const { return absl::string_view(data_ ? data_ : "", size_); }

 private:
  MappedFile() = default;
  const char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace squeeze
