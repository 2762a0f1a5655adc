// A client's channel to the coordinator: plaintext or TLS (mutual TLS with a client certificate),
// with a bearer token sent on every call. Used by squeezectl and workers.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace squeeze {

struct ClientChannelOptions {
  std::string token;          // sent as "authorization: Bearer <token>"; empty: none
  std::string tls_ca_file;    // the coordinator's CA; set to use TLS
  std::string tls_cert_file;  // client certificate and key, for mutual TLS
  std::string tls_key_file;
  int max_receive_bytes = 16 << 20;
};

// Errors name the file that cannot be read.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeClientChannel(
    const std::string& address, const ClientChannelOptions& options);

}  // namespace squeeze
