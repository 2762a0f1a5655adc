// Command-line flags of squeezectl, the coordinator, the worker and the benchmarks: `--name
// value`, `--name=value` and boolean `--name`. Every flag a command accepts is declared first, so
// an unknown or malformed flag is an error that names it.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace squeeze {

// The candidate nearest to `name` by edit distance (a swap of neighbours is one edit) when it is
// near enough to be a typo (at most two edits, and fewer than half of `name`'s characters); empty
// otherwise.
std::string NearestName(const std::string& name, const std::vector<std::string>& candidates);

class Flags {
 public:
  // Declares a flag taking a value, with an optional default.
  Flags& Value(const std::string& name, std::optional<std::string> default_value = std::nullopt);
  // Declares a boolean flag (false unless given).
  Flags& Bool(const std::string& name);
  // Declares how many positional arguments are allowed.
  Flags& Positional(size_t min, size_t max);

  absl::Status Parse(const std::vector<std::string>& args);

  bool Has(const std::string& name) const;
  // The value, or InvalidArgument "--name is required".
  absl::StatusOr<std::string> Get(const std::string& name) const;
  absl::StatusOr<int64_t> GetInt(const std::string& name) const;
  absl::StatusOr<double> GetDouble(const std::string& name) const;
  bool GetBool(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::optional<std::string>> values_;
  std::map<std::string, bool> bools_;
  std::map<std::string, bool> given_;
  std::vector<std::string> positional_;
  size_t min_positional_ = 0, max_positional_ = 0;
};

}  // namespace squeeze
