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

// Why `--token` is refused everywhere.
constexpr char kTokenOnCommandLine[] =
    "--token: a secret on the command line is visible to every user of the machine (ps); give it "
    "with --token-file FILE or an environment variable";

// A client's bearer token, never from argv: the file `token_file` if given, else the file named
// by $<env>_FILE, else $<env> itself, else "" (no authentication). Surrounding whitespace of a
// file is dropped; an empty or unreadable file is an error naming it.
absl::StatusOr<std::string> ClientToken(const std::string& token_file, const std::string& env);
// The token in the file at `path`, surrounding whitespace dropped; an empty or unreadable file is
// an error naming it.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

}  // namespace squeeze
