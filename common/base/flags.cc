#include "common/base/flags.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace squeeze {

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
    if (it == values_.end())
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
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
