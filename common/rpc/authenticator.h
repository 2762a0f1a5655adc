// Bearer tokens mapped to tenants and roles. Tokens are never stored: the file (a Kubernetes
// Secret in a cluster) holds their SHA-256 digests, one per line:
//
//   sha256:<64 hex digits>  <tenant>  <user|admin|worker>  [expires unix seconds]
//
// `squeezectl hash-token TOKEN` prints the first column.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace squeeze {

enum class Role { kUser, kAdmin, kWorker };

struct Principal {
  std::string tenant;
  Role role = Role::kUser;
};

class Authenticator {
 public:
  // Errors name the file and line.
  static absl::StatusOr<std::unique_ptr<Authenticator>> LoadFile(const std::string& path);
  static absl::StatusOr<std::unique_ptr<Authenticator>> Parse(absl::string_view text,
                                                              const std::string& source);

  // `authorization` is the metadata value, "Bearer <token>". UNAUTHENTICATED when it is missing,
  // malformed, unknown or expired (the message says which, never the token).
  absl::StatusOr<Principal> Authenticate(absl::string_view authorization, int64_t now_unix) const;

 private:
  struct Entry {
    Principal principal;
    int64_t expires_unix = 0;  // 0: never
  };
  std::map<std::string, Entry> by_digest_;  // hex SHA-256 of the token
};

std::string TokenDigest(absl::string_view token);  // "sha256:<hex>"

}  // namespace squeeze
