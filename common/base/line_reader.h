// Lines of a text file with a cap on each line's length, so that a file with no newline (or a
// binary file given by mistake) fails with a clear error instead of filling memory.
#pragma once

#include <cstdint>
#include <istream>
#include <string>

#include "absl/status/statusor.h"

namespace squeeze {

class BoundedLineReader {
 public:
  // `name` is how errors refer to the file.
  BoundedLineReader(std::istream& in, std::string name, int64_t max_line_bytes);

  // The next line without its '\n' in *line: true, false at the end, or InvalidArgument
  // "NAME:N: line longer than the limit of M bytes".
  absl::StatusOr<bool> Next(std::string* line);

  // The number of the line Next returned last, from 1.
  int64_t line_number() const { return line_number_; }

 private:
  std::streambuf* buf_;
  std::string name_;
  int64_t max_line_bytes_;
  int64_t line_number_ = 0;
};

}  // namespace squeeze
