// A job's data files (calibration, training and evaluation text) through the store, so that no
// process needs to see another's filesystem. The client uploads each local file once, as the
// artifact ROOT/data/<digest> holding that one file under its own name, and the recipe names
// ROOT/data/<digest>/<name>: the digest in the path pins the content, and every read verifies it.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "common/store/artifact_store.h"

namespace squeeze {

// Stores the local file at `path` under `store_root` (unless an identical one is already there)
// and returns the URI a recipe names it by. NotFound naming `field` when the file is not there.
absl::StatusOr<std::string> UploadDataFile(ArtifactStore& store, const std::string& store_root,
                                           const std::string& path, const std::string& field);

// Stores the local model directory at `path` under `store_root` as the artifact
// ROOT/models/<key> and returns its URI, for a recipe's `model`. The key is a digest of the
// directory's file names, sizes and modification times, so an unchanged directory is found again
// without reading it; its blobs are content addressed either way (nothing is stored twice).
// NotFound naming `field` when it is not a directory.
absl::StatusOr<std::string> UploadModelDirectory(ArtifactStore& store,
                                                 const std::string& store_root,
                                                 const std::string& path, const std::string& field);

// A local path holding the data file `uri` names: a local file as it is (one machine, or a
// shared filesystem), or a file of an artifact (`ARTIFACT/<name>`, on any backend) fetched into
// `scratch_dir` and verified against its digest. Errors name `field`.
absl::StatusOr<std::string> PlaceDataFile(ArtifactStore& store, const std::string& uri,
                                          const std::string& scratch_dir, const std::string& field);

// OK when the data file `uri` names can be read: a regular local file, or a file listed by its
// artifact's manifest. Errors name `field`.
absl::Status CheckDataFile(ArtifactStore& store, const std::string& uri, const std::string& field);

}  // namespace squeeze
