// An ArtifactStore that counts what passes through it, by operation:
//   squeeze_store_bytes_total{operation}   bytes written (put) or read (get, read_range)
//   squeeze_store_operations_total{operation}
//   squeeze_store_errors_total{operation}
#pragma once

#include <memory>

#include "common/store/artifact_store.h"

namespace prometheus {
class Registry;
}

namespace squeeze {

std::unique_ptr<ArtifactStore> InstrumentStore(std::unique_ptr<ArtifactStore> store,
                                               prometheus::Registry& registry);

}  // namespace squeeze
