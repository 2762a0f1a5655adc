// File-system helpers that must not come from std::filesystem.
//
// The GPU image's libtorch exports its own copy of std::filesystem::remove_all, which wins symbol
// resolution in any process that links it and crashes with a call through a null pointer (seen
// with libtorch 2.11; see docs/design-notes.md). RemoveTree is the project's replacement.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace squeeze {

// Total size of the regular files directly in `dir` whose names do not start with '.' (a model
// directory's size on disk, without store bookkeeping files); 0 when it cannot be read.
int64_t DirectoryBytes(const std::string& dir);

// Files that are read whole (recipes, config.json, token and certificate files) are small; this
// bounds what a mistaken or hostile path (/dev/zero, a huge file) can make a process allocate.
constexpr int64_t kDefaultMaxReadBytes = int64_t{64} << 20;

// OK when `path` is a regular file (after symlinks). A FIFO, device, socket or directory is
// InvalidArgument naming it, decided before it is opened: opening a FIFO for reading would block.
absl::Status CheckRegularFile(const std::string& path);

// The whole file, at most `max_bytes` of it: NotFound naming `path` when it cannot be opened,
// InvalidArgument when it is not a regular file or is larger than `max_bytes`.
absl::StatusOr<std::string> ReadFileToString(const std::string& path,
                                             int64_t max_bytes = kDefaultMaxReadBytes);

// Removes `path` and everything below it, not following symlinks. A missing path is OK.
absl::Status RemoveTree(const std::string& path);

}  // namespace squeeze
