// Structured error details on the wire (the gRPC rich error model): a validation error carries a
// google.rpc.BadRequest naming the field, so clients act on the field rather than parse text.
#pragma once

#include <grpcpp/support/status.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace squeeze {

// The field path an error message starts with, by the project's convention "PATH: what was
// expected" ("stages[1].quantize.bits: must be between 2 and 8"); empty when it names none.
std::string LeadingFieldPath(absl::string_view message);

// `s` as a gRPC status. INVALID_ARGUMENT carries a BadRequest with one field violation: the
// message's leading field path, under `field_prefix` when given (SubmitJob reports recipe paths
// as "recipe_yaml.stages[1].quantize.bits"); the prefix alone when the message names no field.
grpc::Status ToGrpcStatus(const absl::Status& s, absl::string_view field_prefix = "");

// The (field, description) pairs of a status's BadRequest details; empty when it has none.
std::vector<std::pair<std::string, std::string>> FieldViolations(const grpc::Status& s);

}  // namespace squeeze
