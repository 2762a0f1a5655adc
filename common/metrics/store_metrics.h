// An ArtifactStore that counts what passes through it, by operation:
//   squeeze_store_bytes_total{operation}   bytes written (put) or read (get, read_range)
//   squeeze_store_operations_total{operation}
//   squeeze_store_errors_total{operation}
#pragma once

#include <memory>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>

#include "common/store/artifact_store.h"

namespace prometheus {
class Registry;
}

namespace squeeze {

// The three counter families above in `registry`, every operation's series present from the start
// so that rates and alerts see zeros rather than gaps. One instance per registry.
struct StoreCounterFamilies {
  explicit StoreCounterFamilies(prometheus::Registry& registry);
  // The family of that metric name, or nullptr.
  prometheus::Family<prometheus::Counter>* ByName(const std::string& name);

  prometheus::Family<prometheus::Counter>& bytes;
  prometheus::Family<prometheus::Counter>& operations;
  prometheus::Family<prometheus::Counter>& errors;
};

std::unique_ptr<ArtifactStore> InstrumentStore(std::unique_ptr<ArtifactStore> store,
                                               prometheus::Registry& registry);

}  // namespace squeeze
