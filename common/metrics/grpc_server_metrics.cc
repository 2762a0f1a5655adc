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

class Families {
 public:
  explicit Families(prometheus::Registry& registry)
      : requests_(prometheus::BuildCounter()
                      .Name("squeeze_grpc_server_requests_total")
                      .Help("gRPC calls handled, by method and status code.")
                      .Register(registry)),
        duration_(prometheus::BuildHistogram()
                      .Name("squeeze_grpc_server_request_duration_seconds")
                      .Help("Time from receiving a gRPC call to sending its status.")
                      .Register(registry)) {}

  void Record(const std::string& method, grpc::StatusCode code, double seconds) {
    std::lock_guard<std::mutex> lock(mu_);
    requests_.Add({{"method", method}, {"code", CodeName(code)}}).Increment();
    auto it = histograms_.find(method);
    if (it == histograms_.end()) {
      // Long polls (LeaseTask, WatchJob) take seconds by design; the buckets reach minutes.
      it = histograms_
               .emplace(method, &duration_.Add({{"method", method}},
                                               prometheus::Histogram::BucketBoundaries{
                                                   0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                   0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}))
               .first;
    }
    it->second->Observe(seconds);
  }

 private:
  std::mutex mu_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& duration_;
  std::map<std::string, prometheus::Histogram*> histograms_;
};

class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(Families* families, std::string method)
      : families_(families), method_(std::move(method)), start_(std::chrono::steady_clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      families_->Record(
          method_, status.error_code(),
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }
    methods->Proceed();
  }

 private:
  Families* families_;
  std::string method_;
  std::chrono::steady_clock::time_point start_;
};

class MetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(prometheus::Registry& registry) : families_(registry) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    // "/squeeze.v1.JobService/SubmitJob" -> "squeeze.v1.JobService/SubmitJob": a bounded set.
    std::string method = info->method() ? info->method() : "unknown";
    if (!method.empty() && method[0] == '/') method.erase(0, 1);
    return new MetricsInterceptor(&families_, std::move(method));
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
