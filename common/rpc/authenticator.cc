#include "common/rpc/authenticator.h"

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/file_util.h"
#include "common/base/sha256.h"

namespace squeeze {

std::string TokenDigest(absl::string_view token) { return "sha256:" + Sha256Hex(token); }

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::LoadFile(const std::string& path) {
  auto text = ReadFileToString(path);
  if (!text.ok())
    return absl::NotFoundError(absl::StrCat("auth tokens file ", text.status().message()));
  return Parse(*text, path);
}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Parse(absl::string_view text,
                                                                    const std::string& source) {
  auto auth = std::unique_ptr<Authenticator>(new Authenticator());
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    const std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    auto bad = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat(source, ":", line_number, ": ", what));
    };
    if (f.size() < 3 || f.size() > 4)
      return bad("expected \"sha256:<hex> <tenant> <user|admin|worker> [expires]\"");
    if (f[0].size() != 71 || f[0].substr(0, 7) != "sha256:")
      return bad("the first field must be sha256:<64 hex digits> (squeezectl hash-token)");
    Entry e;
    e.principal.tenant = std::string(f[1]);
    if (f[2] == "user") {
      e.principal.role = Role::kUser;
    } else if (f[2] == "admin") {
      e.principal.role = Role::kAdmin;
    } else if (f[2] == "worker") {
      e.principal.role = Role::kWorker;
    } else {
      return bad(absl::StrCat("role \"", f[2], "\": expected user, admin or worker"));
    }
    if (f.size() == 4 && !absl::SimpleAtoi(f[3], &e.expires_unix))
      return bad("expiry: expected unix seconds");
    auth->by_digest_[std::string(f[0].substr(7))] = std::move(e);
  }
  return auth;
}

absl::StatusOr<Principal> Authenticator::Authenticate(absl::string_view authorization,
                                                      int64_t now_unix) const {
  if (authorization.empty())
    return absl::UnauthenticatedError("no credentials: send \"authorization: Bearer <token>\"");
  if (authorization.substr(0, 7) != "Bearer " || authorization.size() == 7)
    return absl::UnauthenticatedError("malformed authorization: expected \"Bearer <token>\"");
  auto it = by_digest_.find(Sha256Hex(authorization.substr(7)));
  if (it == by_digest_.end()) return absl::UnauthenticatedError("unknown token");
  if (it->second.expires_unix > 0 && now_unix >= it->second.expires_unix)
    return absl::UnauthenticatedError("token expired");
  return it->second.principal;
}

}  // namespace squeeze
