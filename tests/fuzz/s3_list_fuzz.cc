// libFuzzer target: a ListObjectsV2 response body as the S3 client parses it.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/store/s3_client.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string xml(reinterpret_cast<const char*>(data), size);
  const squeeze::ListObjectsPage page = squeeze::ParseListObjectsPage(xml);
  for (const squeeze::S3ObjectInfo& o : page.objects) {
    if (o.size < 0) __builtin_trap();
  }
  return 0;
}
