#include "common/metrics/grpc_server_metrics.h"

#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <chrono>
#include <map>
#include <mutex>
#include <string>

namespace squeeze {
namespace {

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

// The names and labels of the gRPC ecosystem's server metrics (go-grpc-prometheus, the
// dashboards built on it): grpc_server_started_total, grpc_server_handled_total and
// grpc_server_handling_seconds, labelled grpc_service, grpc_method, grpc_type and grpc_code.
class Families {
 public:
  explicit Families(prometheus::Registry& registry)
      : started_(prometheus::BuildCounter()
                     .Name("grpc_server_started_total")
                     .Help("gRPC calls started on the server.")
                     .Register(registry)),
        handled_(prometheus::BuildCounter()
                     .Name("grpc_server_handled_total")
                     .Help("gRPC calls completed on the server, whatever their status.")
                     .Register(registry)),
        handling_(prometheus::BuildHistogram()
                      .Name("grpc_server_handling_seconds")
                      .Help("Time from receiving a gRPC call to sending its status.")
                      .Register(registry)) {}

  struct Method {
    std::string service, method, type;
  };

  void Started(const Method& m) {
    std::lock_guard<std::mutex> lock(mu_);
    started_.Add(Labels(m)).Increment();
  }

  void Handled(const Method& m, grpc::StatusCode code, double seconds) {
    std::lock_guard<std::mutex> lock(mu_);
    auto labels = Labels(m);
    labels["grpc_code"] = CodeName(code);
    handled_.Add(labels).Increment();
    const std::string key = m.service + "/" + m.method;
    auto it = histograms_.find(key);
    if (it == histograms_.end()) {
      // Long polls (LeaseTask, WatchJob) take seconds by design; the buckets reach minutes.
      it = histograms_
               .emplace(key, &handling_.Add(Labels(m),
                                            prometheus::Histogram::BucketBoundaries{
                                                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                0.5, 1, 2.5, 5, 10, 30, 60, 300}))
               .first;
    }
    it->second->Observe(seconds);
  }

 private:
  static std::map<std::string, std::string> Labels(const Method& m) {
    return {{"grpc_service", m.service}, {"grpc_method", m.method}, {"grpc_type", m.type}};
  }

  std::mutex mu_;
  prometheus::Family<prometheus::Counter>& started_;
  prometheus::Family<prometheus::Counter>& handled_;
  prometheus::Family<prometheus::Histogram>& handling_;
  std::map<std::string, prometheus::Histogram*> histograms_;
};

class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(Families* families, Families::Method method)
      : families_(families), method_(std::move(method)), start_(std::chrono::steady_clock::now()) {
    families_->Started(method_);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      families_->Handled(
          method_, status.error_code(),
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }
    methods->Proceed();
  }

 private:
  Families* families_;
  Families::Method method_;
  std::chrono::steady_clock::time_point start_;
};

const char* TypeName(grpc::experimental::ServerRpcInfo::Type type) {
  using Type = grpc::experimental::ServerRpcInfo::Type;
  switch (type) {
    case Type::UNARY:
      return "unary";
    case Type::CLIENT_STREAMING:
      return "client_stream";
    case Type::SERVER_STREAMING:
      return "server_stream";
    case Type::BIDI_STREAMING:
      return "bidi_stream";
  }
  return "unknown";
}

class MetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(prometheus::Registry& registry) : families_(registry) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    // "/squeeze.v1.JobService/SubmitJob": service "squeeze.v1.JobService", method "SubmitJob".
    // Only registered methods reach here, so the label values are a bounded set.
    std::string full = info->method() ? info->method() : "unknown";
    if (!full.empty() && full[0] == '/') full.erase(0, 1);
    const size_t slash = full.rfind('/');
    Families::Method m;
    m.service = slash == std::string::npos ? "unknown" : full.substr(0, slash);
    m.method = slash == std::string::npos ? full : full.substr(slash + 1);
    m.type = TypeName(info->type());
    return new MetricsInterceptor(&families_, std::move(m));
  }

 private:
  Families families_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewGrpcMetricsInterceptor(
    prometheus::Registry& registry) {
  return std::make_unique<MetricsInterceptorFactory>(registry);
}

}  // namespace squeeze
