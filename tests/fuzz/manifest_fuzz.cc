// libFuzzer target: an artifact's manifest.json as the file store reads it (listing its files,
// and placing them into a scratch directory, which must verify or refuse every blob).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/base/file_util.h"
#include "common/store/artifact_store.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fs = std::filesystem;
  static const fs::path dir =
      fs::temp_directory_path() / ("squeeze-manifest-fuzz-" + std::to_string(::getpid()));
  static auto store = squeeze::OpenArtifactStore("file://" + (dir / "root").string());
  fs::create_directories(dir / "a");
  {
    std::ofstream out(dir / "a" / "manifest.json", std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  const std::string uri = "file://" + (dir / "a").string();
  (void)(*store)->Files(uri);
  auto placed = (*store)->LocalDirectory(uri, (dir / "scratch").string());
  (void)placed;
  squeeze::RemoveTree((dir / "scratch").string()).IgnoreError();
  return 0;
}
