// Which inputs a tenant's job may name. With authentication on, a user's recipe reads only from
// the store (artifacts, content addressed) or from the directories (or s3:// prefixes) that the
// operator gave that tenant: without this, any tenant could name another's private model
// directory and download a compressed copy of it. Admins are not restricted.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/recipe/recipe.h"

namespace squeeze::coordinator {

class TenantInputPolicy {
 public:
  // `roots`: tenant -> the local directories and s3:// prefixes it may read.
  TenantInputPolicy(std::string store_root, std::map<std::string, std::vector<std::string>> roots)
      : store_root_(std::move(store_root)), roots_(std::move(roots)) {}

  // Parses "team-a=/data/a:/models/shared,team-b=s3://bucket/b" (the --tenant-roots flag).
  static absl::StatusOr<std::map<std::string, std::vector<std::string>>> ParseRoots(
      const std::string& flag);

  // PermissionDenied naming the first field (model, data.calibration, data.train,
  // data.evaluation[i]) that `tenant` may not read. Local paths are compared after resolving
  // symbolic links and "..", so neither leads out of a root. The answer is the same whether the
  // path exists or not, so other tenants' files cannot be probed.
  absl::Status Check(const Recipe& recipe, const std::string& tenant) const;

 private:
  absl::Status CheckOne(const std::string& field, const std::string& uri,
                        const std::string& tenant) const;

  const std::string store_root_;
  const std::map<std::string, std::vector<std::string>> roots_;
};

}  // namespace squeeze::coordinator
