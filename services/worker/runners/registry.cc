#include "services/worker/runners/runners.h"

namespace squeeze::worker {

std::map<std::string, std::unique_ptr<TaskRunner>> MakeRunners() {
  std::map<std::string, std::unique_ptr<TaskRunner>> runners;
  runners["calibrate"] = std::make_unique<CalibrateRunner>();
  runners["distill"] = std::make_unique<DistillRunner>();
  runners["evaluate"] = std::make_unique<EvaluateRunner>();
  runners["prune"] = std::make_unique<PruneRunner>();
  runners["quantize"] = std::make_unique<QuantizeRunner>();
  return runners;
}

}  // namespace squeeze::worker
