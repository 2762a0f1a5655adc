#include "common/base/line_reader.h"

#include "absl/strings/str_cat.h"

namespace squeeze {

BoundedLineReader::BoundedLineReader(std::istream& in, std::string name, int64_t max_line_bytes)
    : buf_(in.rdbuf()), name_(std::move(name)), max_line_bytes_(max_line_bytes) {}

absl::StatusOr<bool> BoundedLineReader::Next(std::string* line) {
  line->clear();
  bool any = false;
  // Straight from the stream's buffer: no sentry per character.
  for (int c = buf_->sbumpc(); c != std::char_traits<char>::eof(); c = buf_->sbumpc()) {
    any = true;
    if (c == '\n') break;
    if (static_cast<int64_t>(line->size()) >= max_line_bytes_) {
      ++line_number_;
      return absl::InvalidArgumentError(absl::StrCat(
          name_, ":", line_number_, ": line longer than the limit of ", max_line_bytes_, " bytes"));
    }
    line->push_back(static_cast<char>(c));
  }
  if (any) ++line_number_;
  return any;
}

}  // namespace squeeze
