#include "common/metrics/store_metrics.h"

#include <prometheus/counter.h>
#include <prometheus/registry.h>

#include <filesystem>

#include "common/base/file_util.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

class InstrumentedStore : public ArtifactStore {
 public:
  InstrumentedStore(std::unique_ptr<ArtifactStore> inner, prometheus::Registry& registry)
      : inner_(std::move(inner)), counters_(registry) {}

  absl::Status PutDirectory(const std::string& local_dir, const std::string& uri,
                            const ArtifactProvenance& provenance,
                            const PutOptions& options) override {
    return Count("put", inner_->PutDirectory(local_dir, uri, provenance, options),
                 DirectoryBytes(local_dir));
  }
  absl::StatusOr<StoredFile> PutFileBlob(const std::string& uri, const std::string& name,
                                         const std::string& local_path, bool consume) override {
    std::error_code ec;
    const int64_t bytes = static_cast<int64_t>(fs::file_size(local_path, ec));
    auto stored = inner_->PutFileBlob(uri, name, local_path, consume);
    Record("put", stored.ok(), stored.ok() ? bytes : 0);
    return stored;
  }
  absl::Status PutManifest(const std::string& uri, const std::vector<StoredFile>& files,
                           const ArtifactProvenance& provenance) override {
    return Count("put", inner_->PutManifest(uri, files, provenance), 0);
  }
  absl::StatusOr<std::vector<StoredFile>> Files(const std::string& uri) override {
    return inner_->Files(uri);
  }
  absl::StatusOr<std::string> LocalDirectory(const std::string& uri,
                                             const std::string& scratch) override {
    auto dir = inner_->LocalDirectory(uri, scratch);
    Record("get", dir.ok(), dir.ok() ? DirectoryBytes(*dir) : 0);
    return dir;
  }
  absl::Status FetchFile(const std::string& uri, const std::string& name,
                         const std::string& local_path) override {
    absl::Status s = inner_->FetchFile(uri, name, local_path);
    std::error_code ec;
    return Count("get", s, s.ok() ? static_cast<int64_t>(fs::file_size(local_path, ec)) : 0);
  }
  absl::StatusOr<bool> Exists(const std::string& uri) override { return inner_->Exists(uri); }
  absl::Status PutFile(const std::string& uri, absl::string_view contents) override {
    return Count("put", inner_->PutFile(uri, contents), static_cast<int64_t>(contents.size()));
  }
  absl::StatusOr<std::string> ReadFile(const std::string& uri) override {
    auto text = inner_->ReadFile(uri);
    // A missing object is an answer, not a store error (callers probe with it).
    Record("get", text.ok() || absl::IsNotFound(text.status()),
           text.ok() ? static_cast<int64_t>(text->size()) : 0);
    return text;
  }
  absl::Status Delete(const std::string& uri) override {
    return Count("delete", inner_->Delete(uri), 0);
  }
  absl::StatusOr<std::string> ReadArtifactRange(const std::string& uri, const std::string& name,
                                                int64_t offset, int64_t length,
                                                int64_t* file_size) override {
    auto bytes = inner_->ReadArtifactRange(uri, name, offset, length, file_size);
    Record("read_range", bytes.ok(), bytes.ok() ? static_cast<int64_t>(bytes->size()) : 0);
    return bytes;
  }
  absl::StatusOr<GcReport> CollectGarbage(int64_t grace_seconds) override {
    auto report = inner_->CollectGarbage(grace_seconds);
    Record("gc", report.ok(), 0);
    return report;
  }

 private:
  // Counts the operation; returns `status` unchanged.
  absl::Status Count(const char* op, absl::Status status, int64_t bytes) {
    Record(op, status.ok(), bytes);
    return status;
  }
  void Record(const char* op, bool ok, int64_t bytes) {
    counters_.operations.Add({{"operation", op}}).Increment();
    if (!ok) {
      counters_.errors.Add({{"operation", op}}).Increment();
    } else if (bytes > 0) {
      counters_.bytes.Add({{"operation", op}}).Increment(static_cast<double>(bytes));
    }
  }

  std::unique_ptr<ArtifactStore> inner_;
  StoreCounterFamilies counters_;
};

}  // namespace

StoreCounterFamilies::StoreCounterFamilies(prometheus::Registry& registry)
    : bytes(prometheus::BuildCounter()
                .Name("squeeze_store_bytes_total")
                .Help("Bytes moved to or from the artifact store, by operation.")
                .Register(registry)),
      operations(prometheus::BuildCounter()
                     .Name("squeeze_store_operations_total")
                     .Help("Artifact store operations, by operation.")
                     .Register(registry)),
      errors(prometheus::BuildCounter()
                 .Name("squeeze_store_errors_total")
                 .Help("Artifact store operations that failed, by operation.")
                 .Register(registry)) {
  for (const char* op : {"put", "get", "read_range", "delete", "gc"}) {
    bytes.Add({{"operation", op}});
    operations.Add({{"operation", op}});
    errors.Add({{"operation", op}});
  }
}

prometheus::Family<prometheus::Counter>* StoreCounterFamilies::ByName(const std::string& name) {
  if (name == "squeeze_store_bytes_total") return &bytes;
  if (name == "squeeze_store_operations_total") return &operations;
  if (name == "squeeze_store_errors_total") return &errors;
  return nullptr;
}

std::unique_ptr<ArtifactStore> InstrumentStore(std::unique_ptr<ArtifactStore> store,
                                               prometheus::Registry& registry) {
  return std::make_unique<InstrumentedStore>(std::move(store), registry);
}

}  // namespace squeeze
