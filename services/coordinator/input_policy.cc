#include "services/coordinator/input_policy.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/store/artifact_store.h"

namespace squeeze::coordinator {
namespace {

namespace fs = std::filesystem;

bool IsS3(absl::string_view uri) { return absl::StartsWith(uri, "s3://"); }

// `path` with symbolic links and ".." resolved as far as it exists.
fs::path Resolved(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::absolute(path, ec), ec);
  return ec ? fs::path(path).lexically_normal() : p;
}

bool Within(const fs::path& path, const fs::path& root) {
  auto r = root.begin(), p = path.begin();
  for (; r != root.end(); ++r, ++p) {
    if (r->empty() && std::next(r) == root.end()) break;  // a trailing separator
    if (p == path.end() || *r != *p) return false;
  }
  return true;
}

bool UnderPrefix(const std::string& uri, std::string prefix) {
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  return uri == prefix || absl::StartsWith(uri, prefix + "/");
}

}  // namespace

absl::StatusOr<std::map<std::string, std::vector<std::string>>> TenantInputPolicy::ParseRoots(
    const std::string& flag) {
  std::map<std::string, std::vector<std::string>> out;
  if (flag.empty()) return out;
  for (absl::string_view entry : absl::StrSplit(flag, ',', absl::SkipEmpty())) {
    const size_t eq = entry.find('=');
    if (eq == absl::string_view::npos || eq == 0 || eq + 1 == entry.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tenant-roots: \"", entry, "\": expected TENANT=DIR[:DIR...] (comma-separated)"));
    }
    const std::string tenant(entry.substr(0, eq));
    // s3:// prefixes contain a colon of their own: split on ':' only where a new root starts.
    std::string rest(entry.substr(eq + 1));
    std::vector<std::string> roots;
    size_t start = 0;
    for (size_t i = 0; i <= rest.size(); ++i) {
      if (i == rest.size() || (rest[i] == ':' && rest.compare(i, 3, "://") != 0)) {
        if (i > start) roots.push_back(rest.substr(start, i - start));
        start = i + 1;
      }
    }
    for (const std::string& root : roots) {
      if (!IsS3(root) && !fs::path(FilePathOfUri(root)).is_absolute()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--tenant-roots: ", tenant, ": \"", root, "\" is not an absolute path"));
      }
    }
    auto& mine = out[tenant];
    mine.insert(mine.end(), roots.begin(), roots.end());
  }
  return out;
}

absl::Status TenantInputPolicy::CheckOne(const std::string& field, const std::string& uri,
                                         const std::string& tenant) const {
  if (uri.empty()) return absl::OkStatus();
  std::vector<std::string> allowed = {store_root_};
  if (auto it = roots_.find(tenant); it != roots_.end()) {
    allowed.insert(allowed.end(), it->second.begin(), it->second.end());
  }
  for (const std::string& root : allowed) {
    if (root.empty()) continue;
    if (IsS3(uri) || IsS3(root)) {
      // ".." in a key is just characters to S3, but normalize anyway: no root is left by it.
      const std::string normal = "s3://" + fs::path(uri.substr(5)).lexically_normal().string();
      if (IsS3(uri) && IsS3(root) && UnderPrefix(normal, root)) return absl::OkStatus();
      continue;
    }
    if (Within(Resolved(FilePathOfUri(uri)), Resolved(FilePathOfUri(root))))
      return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrCat(
      field, ": \"", uri, "\" is outside what tenant \"", tenant,
      "\" may read (the store, or the roots the coordinator's --tenant-roots gives the tenant)"));
}

absl::Status TenantInputPolicy::Check(const Recipe& recipe, const std::string& tenant) const {
  if (auto s = CheckOne("model", recipe.model, tenant); !s.ok()) return s;
  if (auto s = CheckOne("data.calibration", recipe.calibration, tenant); !s.ok()) return s;
  if (auto s = CheckOne("data.train", recipe.train, tenant); !s.ok()) return s;
  for (size_t i = 0; i < recipe.evaluation.size(); ++i) {
    if (auto s = CheckOne(absl::StrCat("data.evaluation[", i, "]"), recipe.evaluation[i], tenant);
        !s.ok())
      return s;
  }
  for (size_t i = 0; i < recipe.tasks.size(); ++i) {
    if (auto s = CheckOne(absl::StrCat("data.tasks[", i, "]"), recipe.tasks[i], tenant); !s.ok())
      return s;
  }
  return absl::OkStatus();
}

}  // namespace squeeze::coordinator
