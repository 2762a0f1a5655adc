// The teacher-logits cache: what it computes is the teacher's top-k on the very micro-batches the
// rank will train on, it survives a write and a read bit for bit, a file of another plan is
// refused, and its key changes with anything that changes the batches.
#include "common/train/teacher_logits_cache.h"

#include <unistd.h>

#include <filesystem>

#include "common/base/file_util.h"
#include "gtest/gtest.h"
#include "tests/common/model/tiny_llama_config.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

std::vector<TextExample> Examples() {
  std::vector<TextExample> out;
  for (int e = 0; e < 20; ++e) {
    TextExample x;
    for (int i = 0; i < 40; ++i) x.ids.push_back((e * 7 + i * 3) % 200 + 1);
    out.push_back(std::move(x));
  }
  return out;
}

TeacherLogitsPlan Plan() {
  TeacherLogitsPlan p;
  p.steps = 3;
  p.grad_accum = 2;
  p.batch_size = 8;
  p.seq_len = 16;
  p.world_size = 2;
  p.rank = 1;
  p.seed = 5;
  p.top_k = 4;
  return p;
}

TEST(TeacherLogitsCacheTest, HoldsTheTeachersTopKOfTheRanksBatchesAndRoundTrips) {
  const LlamaModel teacher = LlamaModel::RandomInit(TinyLlamaConfig(2, 32), 11);
  const std::vector<TextExample> examples = Examples();
  const WindowSampler sampler(examples, 16, 5);
  const TeacherLogitsPlan plan = Plan();
  int64_t steps_seen = 0;
  auto cache = TeacherLogitsCache::Compute(teacher, sampler, plan, [&](int64_t) {
    ++steps_seen;
    return absl::OkStatus();
  });
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ(steps_seen, 3);
  // Rank 1 of 2, micro-batch 1 of step 2: rows 2..3 of that micro-batch.
  const TopKLogits direct = TeacherTopK(teacher, sampler.Batch(2, 1, 2, 2), 4);
  EXPECT_TRUE(at::equal(cache->At(2, 1).indices, direct.indices));
  EXPECT_TRUE(at::allclose(cache->At(2, 1).values.to(at::kFloat), direct.values.to(at::kFloat)));

  const fs::path dir = fs::temp_directory_path() / ("logits_cache_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "topk.safetensors").string();
  ASSERT_TRUE(cache->Write(path).ok());
  auto back = TeacherLogitsCache::Read(path, plan);
  ASSERT_TRUE(back.ok()) << back.status();
  for (int64_t step = 0; step < plan.steps; ++step) {
    for (int64_t micro = 0; micro < plan.grad_accum; ++micro) {
      EXPECT_TRUE(at::equal(back->At(step, micro).values, cache->At(step, micro).values));
      EXPECT_TRUE(at::equal(back->At(step, micro).indices, cache->At(step, micro).indices));
    }
  }
  // A file made for another plan (more steps) is not used.
  TeacherLogitsPlan longer = plan;
  longer.steps = 4;
  auto wrong = TeacherLogitsCache::Read(path, longer);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(wrong.status().message().find("4 steps of top-4"), std::string::npos) << wrong.status();
  RemoveTree(dir).IgnoreError();
}

TEST(TeacherLogitsCacheTest, CancellationStopsTheComputation) {
  const LlamaModel teacher = LlamaModel::RandomInit(TinyLlamaConfig(1, 32), 3);
  const std::vector<TextExample> examples = Examples();
  auto cache = TeacherLogitsCache::Compute(
      teacher, WindowSampler(examples, 16, 5), Plan(),
      [](int64_t step) { return step == 1 ? absl::CancelledError("stop") : absl::OkStatus(); });
  EXPECT_EQ(cache.status().code(), absl::StatusCode::kCancelled);
}

TEST(TeacherLogitsCacheTest, KeyChangesWithWhatDecidesTheBatches) {
  const TeacherLogitsPlan plan = Plan();
  const std::string key = TeacherLogitsCache::Key("m", "d", plan);
  EXPECT_EQ(key, TeacherLogitsCache::Key("m", "d", plan));
  for (auto change : std::vector<std::function<void(TeacherLogitsPlan&)>>{
           [](TeacherLogitsPlan& p) { p.rank = 0; }, [](TeacherLogitsPlan& p) { p.seed = 6; },
           [](TeacherLogitsPlan& p) { p.top_k = 8; }, [](TeacherLogitsPlan& p) { p.steps = 9; },
           [](TeacherLogitsPlan& p) { p.world_size = 1; }}) {
    TeacherLogitsPlan other = plan;
    change(other);
    EXPECT_NE(TeacherLogitsCache::Key("m", "d", other), key);
  }
  EXPECT_NE(TeacherLogitsCache::Key("m2", "d", plan), key);
  EXPECT_NE(TeacherLogitsCache::Key("m", "d2", plan), key);
}

}  // namespace
}  // namespace squeeze
