#include "common/base/flags.h"

#include <algorithm>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace squeeze {

std::string NearestName(const std::string& name, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = std::numeric_limits<size_t>::max();
  for (const std::string& c : candidates) {
    // Edit distance counting a swap of neighbours as one edit (optimal string alignment).
    const size_t n = name.size(), m = c.size();
    std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
    for (size_t i = 0; i <= n; ++i) d[i][0] = i;
    for (size_t j = 0; j <= m; ++j) d[0][j] = j;
    for (size_t i = 1; i <= n; ++i) {
      for (size_t j = 1; j <= m; ++j) {
        d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1,
                            d[i - 1][j - 1] + (name[i - 1] == c[j - 1] ? 0 : 1)});
        if (i > 1 && j > 1 && name[i - 1] == c[j - 2] && name[i - 2] == c[j - 1])
          d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
    const size_t distance = d[n][m];
    if (distance < best_distance) {
      best_distance = distance;
      best = c;
    }
  }
  if (best_distance > 2 || 2 * best_distance >= name.size()) return "";
  return best;
}

Flags& Flags::Value(const std::string& name, std::optional<std::string> default_value) {
  values_[name] = std::move(default_value);
  return *this;
}

Flags& Flags::Bool(const std::string& name) {
  bools_[name] = false;
  return *this;
}

Flags& Flags::Positional(size_t min, size_t max) {
  min_positional_ = min;
  max_positional_ = max;
  return *this;
}

absl::Status Flags::Parse(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg.rfind("--", 0) != 0 || arg == "--") {
      positional_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2);
    std::optional<std::string> inline_value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (auto it = bools_.find(name); it != bools_.end()) {
      if (inline_value) {
        if (*inline_value != "true" && *inline_value != "false") {
          return absl::InvalidArgumentError(absl::StrCat("--", name, ": expected true or false"));
        }
        it->second = *inline_value == "true";
      } else {
        it->second = true;
      }
      given_[name] = true;
      continue;
    }
    auto it = values_.find(name);
    if (it == values_.end()) {
      std::vector<std::string> known;
      for (const auto& [n, v] : values_) known.push_back(n);
      for (const auto& [n, v] : bools_) known.push_back(n);
      const std::string near = NearestName(name, known);
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name,
                       near.empty() ? "" : absl::StrCat(" (did you mean --", near, "?)")));
    }
    if (!inline_value) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, ": expected a value"));
      }
      inline_value = args[++i];
    }
    it->second = *inline_value;
    given_[name] = true;
  }
  if (positional_.size() < min_positional_ || positional_.size() > max_positional_) {
    return absl::InvalidArgumentError(
        max_positional_ == 0 ? absl::StrCat("unexpected argument \"", positional_.front(), "\"")
                             : absl::StrCat("expected ", min_positional_, " to ", max_positional_,
                                            " positional arguments, got ", positional_.size()));
  }
  return absl::OkStatus();
}

bool Flags::Has(const std::string& name) const { return given_.count(name) > 0; }

absl::StatusOr<std::string> Flags::Get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end() || !it->second) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " is required"));
  }
  return *it->second;
}

absl::StatusOr<int64_t> Flags::GetInt(const std::string& name) const {
  auto v = Get(name);
  if (!v.ok()) return v.status();
  int64_t out;
  if (!absl::SimpleAtoi(*v, &out)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": expected an integer, got \"", *v, "\""));
  }
  return out;
}

absl::StatusOr<double> Flags::GetDouble(const std::string& name) const {
  auto v = Get(name);
  if (!v.ok()) return v.status();
  double out;
  if (!absl::SimpleAtod(*v, &out)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": expected a number, got \"", *v, "\""));
  }
  return out;
}

bool Flags::GetBool(const std::string& name) const {
  auto it = bools_.find(name);
  return it != bools_.end() && it->second;
}

}  // namespace squeeze
