// Store throughput: put and get of a model (one large file, or --files shards of it) through the
// content-addressed store, next to `cp` of the same files in the same run.
//
//   store_throughput_bench [--gib 2] [--files 1] [--moto-mib 512] [--dir DIR]
//
// Files hash and copy in parallel, a core each (up to 16): one file hashes at one core's
// SHA-256 speed, a sharded model at the machine's.
// file:// put = hash + copy into blobs/ + fsync + manifest; get = link + verify (hash). The
// references are `cp` (no fsync, as users run it) and `cp` followed by an fsync of the copy (the
// same durability as the store's put). All passes run with the source in the page cache, so the
// figures compare CPU and copy paths rather than the disk. moto_server (an S3 implementation in
// Python) is slow, so its MB/s are a regression figure only.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>
#include <vector>

#include "common/base/file_util.h"
#include "common/base/flags.h"
#include "common/base/sha256.h"
#include "common/store/artifact_store.h"
#include "tests/common/store/moto_server.h"
#include "tests/common/store/random_file.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Best of `runs` timings of `f`, which returns false on failure. Dirty pages of earlier passes
// are flushed before each (untimed), so no pass pays for another's write-back.
template <typename F>
double Best(int runs, F f) {
  double best = 1e30;
  for (int i = 0; i < runs; ++i) {
    ::sync();
    const auto start = Clock::now();
    if (!f()) return -1;
    best = std::min(best, Seconds(start));
  }
  return best;
}

bool Shell(const std::string& command) { return std::system(command.c_str()) == 0; }

}  // namespace

int main(int argc, char** argv) {
  squeeze::Flags flags;
  flags.Value("gib", "2")
      .Value("files", "1")
      .Value("moto-mib", "512")
      .Value("dir", "")
      .Value("runs", "3");
  if (auto s = flags.Parse({argv + 1, argv + argc}); !s.ok()) {
    std::cerr << "store_throughput_bench: " << s.message() << "\n";
    return 2;
  }
  const int64_t bytes = static_cast<int64_t>(*flags.GetDouble("gib") * (1ll << 30));
  const int64_t moto_bytes = *flags.GetInt("moto-mib") << 20;
  const int runs = static_cast<int>(*flags.GetInt("runs"));
  const fs::path dir = flags.Get("dir")->empty() ? fs::temp_directory_path() /
                                                       ("store_bench_" + std::to_string(::getpid()))
                                                 : fs::path(*flags.Get("dir"));
  squeeze::RemoveTree(dir).IgnoreError();
  const int64_t files = std::max<int64_t>(1, *flags.GetInt("files"));
  fs::create_directories(dir / "src");
  std::vector<fs::path> sources;
  for (int64_t i = 0; i < files; ++i) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05lld-of-%05lld.safetensors",
                  static_cast<long long>(i + 1), static_cast<long long>(files));
    sources.push_back(dir / "src" / name);
    squeeze::testing::WriteRandomFile(sources.back(), bytes / files);
  }
  const double mb = bytes / 1e6;

  // References: cp of the files, and cp + fsync of the copies.
  const std::string copy = (dir / "copy").string();
  const std::string cp_command =
      "rm -rf '" + copy + "' && cp -r '" + (dir / "src").string() + "' '" + copy + "'";
  const double cp = Best(runs, [&] { return Shell(cp_command); });
  const double cp_sync =
      Best(runs, [&] { return Shell(cp_command + " && sync '" + copy + "'/*"); });

  // SHA-256 of the files one after another, on one core: what a put that hashes on one thread
  // could not beat.
  const double hash = Best(runs, [&] {
    for (const fs::path& p : sources) {
      if (!squeeze::Sha256File(p.string()).ok()) return false;
    }
    return true;
  });

  auto store = squeeze::OpenArtifactStore("file://" + (dir / "store").string());
  if (!store.ok()) {
    std::cerr << store.status() << "\n";
    return 1;
  }
  const std::string uri = "file://" + (dir / "store/models/m").string();
  // Each put starts from an empty store, so it writes the blob (no content-addressing skip).
  const double put = Best(runs, [&] {
    squeeze::RemoveTree(dir / "store").IgnoreError();
    return (*store)->PutDirectory((dir / "src").string(), uri).ok();
  });
  const double get = Best(runs, [&] {
    auto local = (*store)->LocalDirectory(uri, (dir / "got").string());
    return local.ok();
  });
  const double reput = Best(runs, [&] {  // the blob is there: hashed, not written again
    return (*store)->PutDirectory((dir / "src").string(), uri).ok();
  });
  // The same without fsync: the durability of plain cp.
  squeeze::StoreOptions unsynced_options;
  unsynced_options.sync_file_writes = false;
  auto unsynced =
      squeeze::OpenArtifactStore("file://" + (dir / "store").string(), unsynced_options);
  const double put_nosync = Best(runs, [&] {
    squeeze::RemoveTree(dir / "store").IgnoreError();
    return (*unsynced)->PutDirectory((dir / "src").string(), uri).ok();
  });

  std::printf(
      "store throughput, %.2f GiB in %lld file(s), file:// backend, source in page cache, "
      "%u cores\n",
      bytes / double(1ll << 30), static_cast<long long>(files),
      std::thread::hardware_concurrency());
  std::printf("  cp               %7.0f MB/s\n", mb / cp);
  std::printf("  cp + fsync       %7.0f MB/s\n", mb / cp_sync);
  std::printf("  sha256, one core %7.0f MB/s  %.2fx cp\n", mb / hash, cp / hash);
  std::printf(
      "  put (hash, copy, fsync, manifest) %7.0f MB/s  %.2fx cp  %.2fx cp+fsync  "
      "(target >= 0.7x cp)\n",
      mb / put, cp / put, cp_sync / put);
  std::printf("  put without fsync                 %7.0f MB/s  %.2fx cp\n", mb / put_nosync,
              cp / put_nosync);
  std::printf("  put, blob already stored          %7.0f MB/s  %.2fx cp\n", mb / reput, cp / reput);
  std::printf("  get (link + verify)               %7.0f MB/s  %.2fx cp\n", mb / get, cp / get);

  // moto_server (flush first: the fork would otherwise print the buffer twice).
  std::fflush(stdout);
  squeeze::testing::MotoServer moto;
  if (moto_bytes > 0 && moto.Ready("bench")) {
    ::setenv("SQUEEZE_S3_ENDPOINT", moto.endpoint().c_str(), 1);
    ::setenv("AWS_ACCESS_KEY_ID", "testing", 1);
    ::setenv("AWS_SECRET_ACCESS_KEY", "testing", 1);
    fs::create_directories(dir / "small");
    squeeze::testing::WriteRandomFile(dir / "small" / "model.safetensors", moto_bytes);
    auto s3 = squeeze::OpenArtifactStore("s3://bench/store");
    if (!s3.ok()) {
      std::cerr << s3.status() << "\n";
      return 1;
    }
    auto start = Clock::now();
    const absl::Status stored = (*s3)->PutDirectory((dir / "small").string(), "s3://bench/store/m");
    const double s3_put = Seconds(start);
    start = Clock::now();
    auto local = (*s3)->LocalDirectory("s3://bench/store/m", (dir / "s3got").string());
    const double s3_get = Seconds(start);
    if (!stored.ok() || !local.ok()) {
      std::cerr << "moto: " << (stored.ok() ? local.status() : stored) << "\n";
      return 1;
    }
    std::printf(
        "  moto_server, %lld MiB: put %.0f MB/s (multipart), get %.0f MB/s (streamed, "
        "verified)\n",
        static_cast<long long>(moto_bytes >> 20), moto_bytes / 1e6 / s3_put,
        moto_bytes / 1e6 / s3_get);
  }
  squeeze::RemoveTree(dir).IgnoreError();
  return put > 0 && get > 0 ? 0 : 1;
}
