// gRPC server metrics by method and status code, from a server interceptor:
//   squeeze_grpc_server_requests_total{method, code}
//   squeeze_grpc_server_request_duration_seconds{method} (histogram)
#pragma once

#include <grpcpp/support/server_interceptor.h>

#include <memory>

namespace prometheus {
class Registry;
}

namespace squeeze {

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewGrpcMetricsInterceptor(
    prometheus::Registry& registry);

}  // namespace squeeze
