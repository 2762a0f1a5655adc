#include "common/rpc/reflection_service.h"

#include <google/protobuf/descriptor.pb.h>

#include "gtest/gtest.h"
#include "squeeze/v1/jobs.pb.h"

namespace squeeze {
namespace {

namespace rv1 = grpc::reflection::v1;

std::vector<std::string> FileNames(const rv1::ServerReflectionResponse& r) {
  std::vector<std::string> names;
  for (const std::string& bytes : r.file_descriptor_response().file_descriptor_proto()) {
    google::protobuf::FileDescriptorProto proto;
    EXPECT_TRUE(proto.ParseFromString(bytes));
    names.push_back(proto.name());
  }
  return names;
}

class ReflectionV1ServiceTest : public ::testing::Test {
 protected:
  // Makes sure the job API's descriptors are linked into the generated pool.
  void SetUp() override { (void)v1::Job::descriptor(); }
  ReflectionV1Service service_{{"squeeze.v1.JobService", "grpc.reflection.v1.ServerReflection"}};
};

TEST_F(ReflectionV1ServiceTest, ListsTheServicesItWasGiven) {
  rv1::ServerReflectionRequest request;
  request.set_list_services("*");
  const auto response = service_.Answer(request);
  ASSERT_EQ(response.list_services_response().service_size(), 2);
  EXPECT_EQ(response.list_services_response().service(0).name(), "squeeze.v1.JobService");
  EXPECT_EQ(response.original_request().list_services(), "*");
}

TEST_F(ReflectionV1ServiceTest, FileOfASymbolComesWithItsImports) {
  rv1::ServerReflectionRequest request;
  request.set_file_containing_symbol("squeeze.v1.JobService");
  const auto names = FileNames(service_.Answer(request));
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names[0], "squeeze/v1/jobs.proto");
  EXPECT_NE(std::find(names.begin(), names.end(), "google/protobuf/timestamp.proto"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "squeeze/v1/stages.proto"), names.end());
  std::set<std::string> unique(names.begin(), names.end());
  EXPECT_EQ(unique.size(), names.size()) << "each file once";

  request.set_file_containing_symbol("squeeze.v1.Job.tasks");  // a field resolves to its file
  EXPECT_EQ(FileNames(service_.Answer(request))[0], "squeeze/v1/jobs.proto");
  request.set_file_by_filename("squeeze/v1/stages.proto");
  EXPECT_EQ(FileNames(service_.Answer(request))[0], "squeeze/v1/stages.proto");
}

TEST_F(ReflectionV1ServiceTest, UnknownNamesAreNotFoundErrors) {
  rv1::ServerReflectionRequest request;
  request.set_file_containing_symbol("squeeze.v1.NoSuchThing");
  auto response = service_.Answer(request);
  EXPECT_EQ(response.error_response().error_code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
  EXPECT_NE(response.error_response().error_message().find("NoSuchThing"), std::string::npos);
  request.set_file_by_filename("nope.proto");
  EXPECT_EQ(service_.Answer(request).error_response().error_code(),
            static_cast<int>(grpc::StatusCode::NOT_FOUND));
  request.set_all_extension_numbers_of_type("squeeze.v1.Job");
  response = service_.Answer(request);
  EXPECT_EQ(response.all_extension_numbers_response().base_type_name(), "squeeze.v1.Job");
  EXPECT_EQ(response.all_extension_numbers_response().extension_number_size(), 0);
  EXPECT_EQ(service_.Answer(rv1::ServerReflectionRequest()).error_response().error_code(),
            static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
}

}  // namespace
}  // namespace squeeze
