#include "common/rpc/client_channel.h"

#include <grpcpp/support/client_interceptor.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/base/file_util.h"

namespace squeeze {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const std::string& what) {
  auto pem = ReadFileToString(path);
  if (!pem.ok()) return absl::NotFoundError(absl::StrCat(what, " ", pem.status().message()));
  return pem;
}

// Adds the bearer token to every call's metadata (also over plaintext, where gRPC refuses call
// credentials; tokens should travel over TLS in production).
class TokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit TokenInterceptor(const std::string* header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", *header_});
    }
    methods->Proceed();
  }

 private:
  const std::string* header_;
};

class TokenInterceptorFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit TokenInterceptorFactory(std::string token) : header_("Bearer " + std::move(token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new TokenInterceptor(&header_);
  }

 private:
  const std::string header_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeClientChannel(
    const std::string& address, const ClientChannelOptions& options) {
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!options.tls_ca_file.empty()) {
    grpc::SslCredentialsOptions ssl;
    auto ca = ReadPem(options.tls_ca_file, "TLS CA");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    if (!options.tls_cert_file.empty()) {
      auto cert = ReadPem(options.tls_cert_file, "TLS client certificate");
      if (!cert.ok()) return cert.status();
      auto key = ReadPem(options.tls_key_file, "TLS client key");
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    credentials = grpc::SslCredentials(ssl);
  } else if (!options.tls_cert_file.empty()) {
    return absl::InvalidArgumentError("a TLS client certificate needs the coordinator's CA too");
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_receive_bytes);
  // A coordinator that restarts or fails over is back within seconds: gRPC's default reconnect
  // backoff (growing to two minutes) would leave workers silent long after, and their leases
  // would lapse. Retry at least every two seconds.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  if (!options.token.empty())
    interceptors.push_back(std::make_unique<TokenInterceptorFactory>(options.token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(address, credentials, args,
                                                                 std::move(interceptors));
}

absl::StatusOr<std::string> ClientToken(const std::string& token_file, const std::string& env) {
  std::string path = token_file;
  if (path.empty()) {
    const char* file = std::getenv((env + "_FILE").c_str());
    path = file ? file : "";
  }
  if (path.empty()) {
    const char* value = std::getenv(env.c_str());
    return std::string(value ? value : "");
  }
  return ReadTokenFile(path);
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  auto text = ReadFileToString(path, 64 << 10);
  if (!text.ok()) {
    return absl::Status(text.status().code(),
                        absl::StrCat("token file: ", text.status().message()));
  }
  const size_t begin = text->find_first_not_of(" \t\r\n");
  if (begin == std::string::npos)
    return absl::InvalidArgumentError(absl::StrCat("token file ", path, " is empty"));
  const size_t end = text->find_last_not_of(" \t\r\n");
  return text->substr(begin, end - begin + 1);
}

}  // namespace squeeze
