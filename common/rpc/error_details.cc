#include "common/rpc/error_details.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace squeeze {
namespace {

bool IsPathChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '[' ||
         c == ']' || c == '-';
}

}  // namespace

std::string LeadingFieldPath(absl::string_view message) {
  const size_t colon = message.find(": ");
  if (colon == 0 || colon == absl::string_view::npos) return "";
  const absl::string_view path = message.substr(0, colon);
  for (char c : path)
    if (!IsPathChar(c)) return "";
  if (!absl::ascii_isalpha(static_cast<unsigned char>(path[0]))) return "";
  return std::string(path);
}

grpc::Status ToGrpcStatus(const absl::Status& s, absl::string_view field_prefix) {
  if (s.ok()) return grpc::Status::OK;
  const auto code = static_cast<grpc::StatusCode>(s.code());
  const std::string message(s.message());
  if (s.code() != absl::StatusCode::kInvalidArgument) return grpc::Status(code, message);
  std::string field = LeadingFieldPath(message);
  // "recipe: not valid YAML" names the recipe as a whole: under a prefix, that is the prefix.
  if (!field_prefix.empty()) {
    field = field.empty() || field == "recipe" ? std::string(field_prefix)
                                               : absl::StrCat(field_prefix, ".", field);
  }
  google::rpc::BadRequest bad_request;
  google::rpc::BadRequest::FieldViolation* violation = bad_request.add_field_violations();
  violation->set_field(field);
  violation->set_description(message);
  google::rpc::Status details;
  details.set_code(static_cast<int>(code));
  details.set_message(message);
  details.add_details()->PackFrom(bad_request);
  return grpc::Status(code, message, details.SerializeAsString());
}

std::vector<std::pair<std::string, std::string>> FieldViolations(const grpc::Status& s) {
  std::vector<std::pair<std::string, std::string>> out;
  google::rpc::Status details;
  if (s.error_details().empty() || !details.ParseFromString(s.error_details())) return out;
  for (const google::protobuf::Any& any : details.details()) {
    google::rpc::BadRequest bad_request;
    if (!any.UnpackTo(&bad_request)) continue;
    for (const auto& v : bad_request.field_violations())
      out.emplace_back(v.field(), v.description());
  }
  return out;
}

}  // namespace squeeze
