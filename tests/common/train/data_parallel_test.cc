// Two data-parallel ranks over Gloo (threads of this process, a real TCP rendezvous on loopback):
// after every step both hold identical parameters, equal to one process training on the whole
// batch, with gradient accumulation and with a parameter that gets no gradient.
#include "common/train/data_parallel.h"

#include <thread>

#include "common/train/trainer.h"
#include "gtest/gtest.h"
#include "tests/common/free_port.h"
#include "tests/common/model/tiny_llama_config.h"

namespace squeeze {
namespace {

int FreePort() { return testing::FreeLoopbackPort(); }

std::vector<TextExample> Corpus() {
  ByteTokenizer t;
  std::vector<TextExample> out;
  for (int rep = 0; rep < 20; ++rep) {
    out.push_back({t.Encode("the cat sat on the mat. "), ""});
    out.push_back({t.Encode("a dog and a cat sat together on a log. "), ""});
  }
  return out;
}

TrainerOptions Options() {
  TrainerOptions o;
  o.steps = 4;
  o.batch_size = 8;
  o.grad_accum = 2;
  o.seq_len = 24;
  o.warmup_steps = 1;
  o.lr = 1e-2;
  return o;
}

TEST(DataParallelTest, TwoGlooRanksStayIdenticalAndMatchOneProcess) {
  if (!DataParallel::HasGloo()) GTEST_SKIP() << "this libtorch build has no Gloo headers";
  const WindowSampler sampler(Corpus(), 24, 3);
  // The reference: one process, the whole batch.
  LlamaModel single = LlamaModel::RandomInit(TinyLlamaConfig(), 5);
  CrossEntropyObjective ce;
  ASSERT_TRUE(Trainer(&single, Options()).Run(sampler, ce).ok());

  const std::string rendezvous = "127.0.0.1:" + std::to_string(FreePort());
  std::vector<LlamaModel> models;
  // Rank 1 starts from different weights: the broadcast from rank 0 must fix that.
  models.push_back(LlamaModel::RandomInit(TinyLlamaConfig(), 5));
  models.push_back(LlamaModel::RandomInit(TinyLlamaConfig(), 99));
  std::vector<absl::Status> results(2);
  std::vector<std::vector<double>> losses(2);
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < 2; ++rank) {
    ranks.emplace_back([&, rank] {
      auto group = DataParallel::Connect(rendezvous, rank, 2, at::kCPU, std::chrono::seconds(30));
      if (!group.ok()) {
        results[rank] = group.status();
        return;
      }
      CrossEntropyObjective objective;
      TrainerCallbacks callbacks;
      callbacks.on_step = [&, rank](const TrainStepStats& s) { losses[rank].push_back(s.loss); };
      results[rank] =
          Trainer(&models[rank], Options(), group->get()).Run(sampler, objective, callbacks);
    });
  }
  for (auto& t : ranks) t.join();
  ASSERT_TRUE(results[0].ok()) << results[0];
  ASSERT_TRUE(results[1].ok()) << results[1];
  EXPECT_EQ(losses[0], losses[1]) << "the logged loss is the mean over ranks";
  auto p0 = models[0].NamedParameters(), p1 = models[1].NamedParameters(),
       ps = single.NamedParameters();
  ASSERT_EQ(p0.size(), p1.size());
  for (size_t i = 0; i < p0.size(); ++i) {
    EXPECT_TRUE(at::equal(*p0[i].second, *p1[i].second)) << p0[i].first << " differs across ranks";
    EXPECT_TRUE(at::allclose(*p0[i].second, *ps[i].second, 1e-4, 1e-5))
        << p0[i].first << " differs from the single-process run";
  }
}

TEST(DataParallelTest, ABatchThatCannotBeSplitIsRejected) {
  if (!DataParallel::HasGloo()) GTEST_SKIP() << "this libtorch build has no Gloo headers";
  const std::string rendezvous = "127.0.0.1:" + std::to_string(FreePort());
  std::vector<absl::Status> results(2);
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < 2; ++rank) {
    ranks.emplace_back([&, rank] {
      auto group = DataParallel::Connect(rendezvous, rank, 2, at::kCPU, std::chrono::seconds(30));
      ASSERT_TRUE(group.ok()) << group.status();
      LlamaModel model = LlamaModel::RandomInit(TinyLlamaConfig(), 5);
      TrainerOptions o = Options();
      o.batch_size = 6;  // 3 rows per micro-batch over 2 ranks
      CrossEntropyObjective objective;
      results[rank] =
          Trainer(&model, o, group->get()).Run(WindowSampler(Corpus(), 24, 0), objective);
    });
  }
  for (auto& t : ranks) t.join();
  for (const absl::Status& s : results) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("batch_size"), absl::string_view::npos) << s;
  }
  EXPECT_EQ(
      DataParallel::Connect("nohost", 0, 2, at::kCPU, std::chrono::seconds(1)).status().code(),
      absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace squeeze
