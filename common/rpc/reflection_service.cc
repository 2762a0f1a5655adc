#include "common/rpc/reflection_service.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>

#include <set>

namespace squeeze {
namespace {

namespace rv1 = grpc::reflection::v1;
using google::protobuf::DescriptorPool;
using google::protobuf::FileDescriptor;

// The file and everything it imports, the file first, each once: what a client needs to
// rebuild the file's types without asking again.
void AddFileWithImports(const FileDescriptor* file, std::set<std::string>& sent,
                        rv1::FileDescriptorResponse* out) {
  if (!sent.insert(file->name()).second) return;
  google::protobuf::FileDescriptorProto proto;
  file->CopyTo(&proto);
  out->add_file_descriptor_proto(proto.SerializeAsString());
  for (int i = 0; i < file->dependency_count(); ++i)
    AddFileWithImports(file->dependency(i), sent, out);
}

void SetError(rv1::ServerReflectionResponse& response, grpc::StatusCode code,
              const std::string& message) {
  response.mutable_error_response()->set_error_code(static_cast<int>(code));
  response.mutable_error_response()->set_error_message(message);
}

}  // namespace

ReflectionV1Service::ReflectionV1Service(std::vector<std::string> services)
    : services_(std::move(services)) {}

rv1::ServerReflectionResponse ReflectionV1Service::Answer(
    const rv1::ServerReflectionRequest& request) const {
  const DescriptorPool* pool = DescriptorPool::generated_pool();
  rv1::ServerReflectionResponse response;
  response.set_valid_host(request.host());
  *response.mutable_original_request() = request;
  // The three file requests differ only in how the file is found and what a miss says.
  const FileDescriptor* file = nullptr;
  std::string missing;
  switch (request.message_request_case()) {
    case rv1::ServerReflectionRequest::kListServices:
      for (const std::string& name : services_)
        response.mutable_list_services_response()->add_service()->set_name(name);
      return response;
    case rv1::ServerReflectionRequest::kFileByFilename:
      file = pool->FindFileByName(request.file_by_filename());
      missing = "file_by_filename: no file \"" + request.file_by_filename() + "\"";
      break;
    case rv1::ServerReflectionRequest::kFileContainingSymbol:
      file = pool->FindFileContainingSymbol(request.file_containing_symbol());
      missing = "file_containing_symbol: no symbol \"" + request.file_containing_symbol() + "\"";
      break;
    case rv1::ServerReflectionRequest::kFileContainingExtension: {
      const auto& ask = request.file_containing_extension();
      const auto* type = pool->FindMessageTypeByName(ask.containing_type());
      const auto* extension =
          type == nullptr ? nullptr : pool->FindExtensionByNumber(type, ask.extension_number());
      if (extension != nullptr) file = extension->file();
      missing = "file_containing_extension: no extension " +
                std::to_string(ask.extension_number()) + " of \"" + ask.containing_type() + "\"";
      break;
    }
    case rv1::ServerReflectionRequest::kAllExtensionNumbersOfType: {
      const auto* type = pool->FindMessageTypeByName(request.all_extension_numbers_of_type());
      if (type == nullptr) {
        SetError(response, grpc::StatusCode::NOT_FOUND,
                 "all_extension_numbers_of_type: no type \"" +
                     request.all_extension_numbers_of_type() + "\"");
        return response;
      }
      std::vector<const google::protobuf::FieldDescriptor*> extensions;
      pool->FindAllExtensions(type, &extensions);
      auto* out = response.mutable_all_extension_numbers_response();
      out->set_base_type_name(type->full_name());
      for (const auto* e : extensions) out->add_extension_number(e->number());
      return response;
    }
    default:
      SetError(response, grpc::StatusCode::INVALID_ARGUMENT,
               "message_request: expected one of list_services, file_by_filename, "
               "file_containing_symbol, file_containing_extension, "
               "all_extension_numbers_of_type");
      return response;
  }
  if (file == nullptr) {
    SetError(response, grpc::StatusCode::NOT_FOUND, missing);
    return response;
  }
  std::set<std::string> sent;
  AddFileWithImports(file, sent, response.mutable_file_descriptor_response());
  return response;
}

grpc::Status ReflectionV1Service::ServerReflectionInfo(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<rv1::ServerReflectionResponse, rv1::ServerReflectionRequest>* stream) {
  rv1::ServerReflectionRequest request;
  while (!context->IsCancelled() && stream->Read(&request)) {
    if (!stream->Write(Answer(request))) break;
  }
  return grpc::Status::OK;
}

}  // namespace squeeze
