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

// The whole file; NotFound naming `path` when it cannot be opened.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Removes `path` and everything below it, not following symlinks. A missing path is OK.
absl::Status RemoveTree(const std::string& path);

}  // namespace squeeze
