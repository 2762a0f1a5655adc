#include "common/recipe/recipe.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/tensor/safetensors.h"
#include "gtest/gtest.h"

namespace squeeze {
namespace {

constexpr char kGood[] = R"(
model: file:///models/teacher
data:
  calibration: /data/calib.jsonl
  evaluation: [/data/eval.jsonl]
max_attempts: 5
stages:
  - evaluate: {metrics: [perplexity, size]}
  - quantize: {method: rtn, bits: 3, group_size: 64, sym: true, gpus: 1}
  - evaluate: {gate: {min_retention: 0.9}, max_attempts: 2}
)";

TEST(RecipeTest, ParsesStagesWithDefaults) {
  auto r = ParseRecipe(kGood);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model, "file:///models/teacher");
  EXPECT_EQ(r->evaluation, std::vector<std::string>{"/data/eval.jsonl"});
  EXPECT_EQ(r->max_attempts, 5);
  ASSERT_EQ(r->stages.size(), 3u);
  EXPECT_EQ(r->stages[1].kind, "quantize");
  EXPECT_EQ(r->stages[1].gpus, 1);
  ASSERT_TRUE(r->stages[1].options.has_quantize());
  const v1::QuantizeStage& q = r->stages[1].options.quantize();
  EXPECT_EQ(q.bits(), 3);
  EXPECT_EQ(q.group_size(), 64);
  EXPECT_EQ(q.sym(), true);
  EXPECT_EQ(q.method(), v1::QuantizeStage::RTN);  // default filled in
  EXPECT_EQ(q.damp(), 0.01) << "GPTQ's settings are filled for every method";
  EXPECT_EQ(q.block_size(), 128);
  EXPECT_EQ(q.awq().grid(), 20) << "AWQ's settings are filled for every method";
  EXPECT_TRUE(q.awq().clip());
  EXPECT_EQ(q.format(), v1::QuantizeStage::FORMAT_GPTQ);
  ASSERT_TRUE(r->stages[2].options.has_evaluate());
  const v1::EvaluateStage& e = r->stages[2].options.evaluate();
  EXPECT_EQ(e.gate().min_retention(), 0.9);
  EXPECT_FALSE(e.gate().has_max_size_bytes());
  EXPECT_EQ(e.window(), 512);  // default filled in
  EXPECT_EQ(e.metrics_size(), 3);
  EXPECT_EQ(e.dtype(), v1::EvaluateStage::FLOAT32);  // default filled in
  EXPECT_EQ(StageKind(r->stages[2].options), "evaluate");
  EXPECT_EQ(r->stages[2].max_attempts, 2);
}

TEST(RecipeTest, StageTimeoutTakesSecondsOrAUnit) {
  auto timeout = [](const std::string& value) -> absl::StatusOr<int64_t> {
    auto r = ParseRecipe("model: /m\nstages:\n  - quantize: {bits: 4, timeout: " + value + "}\n");
    if (!r.ok()) return r.status();
    return r->stages[0].timeout_ms;
  };
  EXPECT_EQ(*timeout("90"), 90000);
  EXPECT_EQ(*timeout("2s"), 2000);
  EXPECT_EQ(*timeout("30m"), 1800000);
  EXPECT_EQ(*timeout("2h"), 7200000);
  EXPECT_EQ(*timeout("1d"), 86400000);
  EXPECT_EQ(ParseRecipe("model: /m\nstages:\n  - quantize: {bits: 4}\n")->stages[0].timeout_ms, 0)
      << "no timeout unless asked";
  for (const char* bad : {"2w", "s", "-5s", "1.5h", "[1]", "\"\""}) {
    auto t = timeout(bad);
    ASSERT_FALSE(t.ok()) << bad;
    EXPECT_NE(t.status().message().find("stages[0].quantize.timeout: expected a duration"),
              std::string::npos)
        << t.status();
  }
  EXPECT_NE(timeout("0s").status().message().find("must be between 1s and 604800s"),
            std::string::npos);
  EXPECT_FALSE(timeout("8d").ok());
}

TEST(RecipeTest, DistillPruneScheduleDefaults) {
  auto r = ParseRecipe(
      "model: /m\ndata: {train: /t}\nstages:\n  - distill: {student: {keep_every: 1}, steps: 90, "
      "prune: {sparsity: 0.6, rounds: 3}}\n");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->stages[0].options.distill().has_prune());
  const v1::PruneSchedule& p = r->stages[0].options.distill().prune();
  EXPECT_EQ(p.target().method(), v1::PruneTarget::WANDA);
  EXPECT_EQ(p.target().pattern(), v1::PruneTarget::UNSTRUCTURED);
  EXPECT_EQ(p.target().sparsity(), 0.6);
  EXPECT_EQ(p.rounds(), 3);
  EXPECT_EQ(p.recover_steps(), 30);  // the steps shared out over the rounds
  EXPECT_EQ(p.calibration_batches(), 4);

  // SparseGPT joins the schedule: its rounds prune on the Hessians of the calibration batches.
  auto sparsegpt = ParseRecipe(
      "model: /m\ndata: {train: /t}\nstages:\n  - distill: {student: {keep_every: 1}, steps: 90, "
      "prune: {method: sparsegpt, sparsity: 0.5, rounds: 2}}\n");
  ASSERT_TRUE(sparsegpt.ok()) << sparsegpt.status();
  EXPECT_EQ(sparsegpt->stages[0].options.distill().prune().target().method(),
            v1::PruneTarget::SPARSEGPT);
  EXPECT_EQ(sparsegpt->stages[0].options.distill().prune().rounds(), 2);
}

TEST(RecipeTest, AliasesDuplicateKeysAndOversizedRecipesAreRefused) {
  auto message = [](const std::string& yaml, const RecipeLimits& limits = {}) {
    auto r = ParseRecipe(yaml, limits);
    EXPECT_FALSE(r.ok()) << yaml;
    return r.ok() ? std::string() : std::string(r.status().message());
  };
  // A million aliases would expand on the server: refused before any node is built.
  std::string bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: [*a, *a, *a, *a]\nmodel: /m\n";
  EXPECT_NE(message(bomb).find("line 2, column 5: YAML aliases (*name) are not allowed"),
            std::string::npos)
      << message(bomb);
  EXPECT_NE(message("model: /a\nmodel: /b\nstages: [{evaluate: {}}]\n")
                .find("line 2, column 1: key \"model\" appears twice"),
            std::string::npos);
  EXPECT_NE(message("model: /m\nstages:\n  - quantize: {bits: 4, bits: 8}\n")
                .find("key \"bits\" appears twice"),
            std::string::npos);
  // The same key in different mappings is fine.
  EXPECT_TRUE(ParseRecipe("model: /m\nstages:\n  - quantize: {bits: 4}\n  - quantize: {bits: "
                          "8}\n")
                  .ok());
  RecipeLimits limits;
  limits.max_bytes = 100;
  EXPECT_NE(message(std::string(101, '#'), limits).find("more than the limit of 100"),
            std::string::npos);
  limits = {};
  limits.max_stages = 2;
  EXPECT_NE(message("model: /m\nstages: [{quantize: {}}, {quantize: {}}, {quantize: {}}]\n", limits)
                .find("stages: 3 stages, more than the limit of 2"),
            std::string::npos);
  // Found by tests/fuzz/recipe_fuzz: yaml-cpp never returns from these; refused before parsing.
  for (const char* hang : {"{k: 1}\n,\n", "# c\n[1]\n,\n", "# c\n    ,  lr: 0.0001\n"}) {
    EXPECT_NE(message(hang).find("not valid YAML"), std::string::npos) << hang << message(hang);
  }
  const std::string bad_utf8 = message("model: /m\xff\xfe\nstages: [{quantize: {}}]\n");
  EXPECT_NE(bad_utf8.find("recipe: not valid UTF-8 (byte 9"), std::string::npos) << bad_utf8;
}

TEST(RecipeTest, ErrorsNameTheFieldPath) {
  struct Case {
    std::string yaml, expect;
  };
  const std::string head = "model: /m\ndata: {evaluation: [/e.jsonl]}\n";
  const Case cases[] = {
      {head + "stages:\n  - quantize: {bits: 5}\n",
       "stages[0].quantize.bits: must be one of 2, 3, 4, 8"},
      {head + "stages:\n  - evaluate: {}\n  - quantize: {bitz: 4}\n",
       "stages[1].quantize.bitz: unknown field"},
      {head + "stages:\n  - compress: {}\n", "stages[0]: unknown stage \"compress\""},
      {head + "stages:\n  - quantize: {method: hqq}\n",
       "stages[0].quantize.method: must be one of rtn, gptq, awq"},
      {head + "stages:\n  - quantize: {method: awq}\n",
       "data.calibration: required by stages[0].quantize (method awq)"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {method: awq, act_order: "
       "true}\n",
       "stages[0].quantize.act_order: is a gptq setting; method awq does not take it"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {method: awq, grid: 0}\n",
       "stages[0].quantize.grid"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {method: awq, max_shrink: "
       "1.5}\n",
       "stages[0].quantize.max_shrink"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {method: awq, bits: 3, format: "
       "awq_gemm}\n",
       "stages[0].quantize.format: awq_gemm holds 4-bit codes only, got bits 3"},
      {head + "stages:\n  - quantize: {method: gptq, format: awq_gemm}\n",
       "stages[0].quantize.format: awq_gemm labels the codes as AWQ's; method gptq writes gptq"},
      {head + "stages:\n  - quantize: {format: marlin}\n",
       "stages[0].quantize.format: must be one of gptq, awq_gemm, compressed_tensors"},
      {head + "stages:\n  - quantize: {activations: static}\n",
       "data.calibration: required by stages[0].quantize (activations static"},
      {head + "stages:\n  - quantize: {activations: dynamic, smoothquant_alpha: 0.5}\n",
       "data.calibration: required by stages[0].quantize (smoothquant_alpha)"},
      {head + "stages:\n  - quantize: {activations: dynamic, bits: 4}\n",
       "stages[0].quantize.bits: activations dynamic needs 8-bit weights"},
      {head + "stages:\n  - quantize: {activations: dynamic, group_size: 128}\n",
       "stages[0].quantize.group_size: activations dynamic needs one scale per output channel"},
      {head + "stages:\n  - quantize: {activations: dynamic, sym: false}\n",
       "stages[0].quantize.sym: activations dynamic needs symmetric weights"},
      {head + "stages:\n  - quantize: {activations: dynamic, format: gptq}\n",
       "stages[0].quantize.format: gptq stores no activation quantization"},
      {head + "stages:\n  - quantize: {smoothquant_alpha: 0.5}\n",
       "stages[0].quantize.smoothquant_alpha: smooths activations"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {activations: dynamic, "
       "smoothquant_alpha: 1.5}\n",
       "stages[0].quantize.smoothquant_alpha"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {method: awq, activations: "
       "dynamic}\n",
       "stages[0].quantize.activations: method awq quantizes weights only"},
      {head + "stages:\n  - quantize: {activations: int4}\n",
       "stages[0].quantize.activations: must be one of none, dynamic, static"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {method: rtn, grid: 10}\n",
       "stages[0].quantize.grid: unknown field"},
      {head + "stages:\n  - quantize: {method: gptq}\n",
       "data.calibration: required by stages[0].quantize (method gptq)"},
      {head + "stages:\n  - quantize: {mixed_precision: {average_bits: 3.5}}\n",
       "data.calibration: required by stages[0].quantize (mixed_precision"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {mixed_precision: "
       "{average_bits: 1.5}}\n",
       "stages[0].quantize.mixed_precision.average_bits: 1.5 is below the smallest width in bits "
       "(2)"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {mixed_precision: {bits: [3, "
       "4], average_bits: 2.5}}\n",
       "stages[0].quantize.mixed_precision.average_bits: 2.5 is below the smallest width in bits "
       "(3)"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {mixed_precision: {bits: [3, "
       "5], average_bits: 3.5}}\n",
       "stages[0].quantize.mixed_precision.bits[1]: must be one of 2, 3, 4, 8, got 5"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {mixed_precision: {bits: [3, "
       "3], average_bits: 3.5}}\n",
       "stages[0].quantize.mixed_precision.bits[1]: 3 is listed twice"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {mixed_precision: {bits: [3, "
       "4]}}\n",
       "stages[0].quantize.mixed_precision: needs exactly one budget"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {mixed_precision: "
       "{average_bits: 3, max_size_bytes: 100}}\n",
       "stages[0].quantize.mixed_precision: needs exactly one budget"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {mixed_precision: "
       "{max_size_bytes: 0}}\n",
       "stages[0].quantize.mixed_precision.max_size_bytes: must be between 1"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {mixed_precision: "
       "{average_bits: 3, budget: 2}}\n",
       "stages[0].quantize.mixed_precision.budget: unknown field"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {method: awq, "
       "mixed_precision: {average_bits: 3.5}}\n",
       "stages[0].quantize.mixed_precision: is chosen for method rtn or gptq"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {activations: dynamic, "
       "mixed_precision: {average_bits: 3.5}}\n",
       "stages[0].quantize.mixed_precision: W8A8 keeps every linear at 8 bits"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {bits: 8, group_size: -1, "
       "sym: true, format: compressed_tensors, mixed_precision: {average_bits: 3.5}}\n",
       "stages[0].quantize.format: compressed_tensors holds one width"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {method: gptq, static_groups: "
       "true}\n",
       "stages[0].quantize.static_groups: needs act_order: true"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {method: gptq, damp: 2}\n",
       "stages[0].quantize.damp"},
      {head + "stages:\n  - prune: {}\n",
       "data.calibration: required by stages[0].prune (method wanda)"},
      {head + "stages:\n  - prune: {method: sparsegpt}\n",
       "data.calibration: required by stages[0].prune (method sparsegpt)"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - prune: {method: sparsegpt, pattern: "
       "channels}\n",
       "stages[0].prune.pattern: sparsegpt zeros single weights"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - prune: {method: wanda, pattern: "
       "\"4:8\"}\n",
       "stages[0].prune.pattern: 4:8 is pruned by method sparsegpt only"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - prune: {method: sparsegpt, pattern: "
       "\"4:8\", sparsity: 0.6}\n",
       "stages[0].prune.sparsity: the 4:8 pattern is 0.5 sparse"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - prune: {method: wanda, damp: 0.1}\n",
       "stages[0].prune.damp: unknown field"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - prune: {method: sparsegpt, format: "
       "sparse_24_bitmask}\n",
       "stages[0].prune.format: sparse_24_bitmask holds 2:4 sparsity only"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {method: rtn, prune: "
       "{sparsity: 0.5}}\n",
       "stages[0].quantize.prune: prunes in GPTQ's pass (SparseGPT); method rtn has none"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {method: gptq, prune: "
       "{method: wanda}}\n",
       "stages[0].quantize.prune.method: must be one of sparsegpt"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {method: gptq, act_order: "
       "true, prune: {sparsity: 0.5}}\n",
       "stages[0].quantize.act_order: SparseGPT keeps the columns in their order"},
      {"model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {method: gptq, prune: "
       "{sparsity: 1.0}}\n",
       "stages[0].quantize.prune.sparsity: must be in (0, 1)"},
      {head + "stages:\n  - prune: {method: magnitude, sparsity: 0}\n",
       "stages[0].prune.sparsity: must be in (0, 1), got 0"},
      {head + "stages:\n  - prune: {method: magnitude, pattern: \"2:4\", sparsity: 0.7}\n",
       "stages[0].prune.sparsity: the 2:4 pattern is 0.5 sparse"},
      {"model: /m\ndata: {train: /t}\nstages:\n  - distill: {student: {keep_every: 1}, prune: "
       "{pattern: heads}}\n",
       "stages[0].distill.prune.pattern: heads changes the model's shape"},
      {head + "stages:\n  - prune: {method: obs}\n",
       "stages[0].prune.method: must be one of magnitude, wanda"},
      {"model: /m\ndata: {train: /t}\nstages:\n  - distill: {student: {keep_every: 1}, teacher: "
       "pruned}\n",
       "stages[0].distill.teacher: must be one of input, original"},
      {"model: /m\ndata: {train: /t}\nstages:\n  - distill: {}\n",
       "stages[0].distill.student: required"},
      {"model: /m\ndata: {train: /t}\nstages:\n  - distill: {student: {keep_every: 2}, "
       "temperature: 0}\n",
       "stages[0].distill.temperature: must be positive, got 0"},
      {"model: /m\ndata: {train: /t}\nstages:\n  - distill: {student: {keep_every: 2}, alpha: "
       "1.5}\n",
       "stages[0].distill.alpha: must be between 0 and 1, got 1.5"},
      {"model: /m\ndata: {train: /t}\nstages:\n  - distill: {student: {keep_every: 2}, "
       "workers: 4, batch_size: 6}\n",
       "stages[0].distill.batch_size: 6 sequences cannot be split into 1 micro-batches over 4 "
       "workers"},
      {"model: /m\ndata: {train: /t}\nstages:\n  - distill: {student: {keep_every: 2, layers: "
       "[0]}}\n",
       "stages[0].distill.student: expected exactly one of keep_every, layers or config"},
      {"model: /m\ndata: {train: /t}\nstages:\n  - distill: {student: {config: {width: 3}}}\n",
       "stages[0].distill.student.config.width: unknown field"},
      {"model: /m\ndata: {train: /t}\nstages:\n  - distill: {student: {keep_every: 2}, "
       "hidden_loss: {type: l1, layers: [[0, 1]]}}\n",
       "stages[0].distill.hidden_loss.type: must be one of mse, cosine"},
      {"model: /m\ndata: {train: /t}\nstages:\n  - distill: {student: {keep_every: 2}, "
       "early_stopping: {patience: 2}}\n",
       "stages[0].distill.early_stopping: needs eval_every > 0"},
      {"model: /m\nstages:\n  - distill: {student: {keep_every: 2}}\n",
       "data.train: required by stages[0].distill"},
      {"model: /m\ndata: {train: /t}\nstages:\n  - distill: {student: {keep_every: 2}, "
       "hidden_loss: {layers: [[0, 1]]}, teacher_logits: {top_k: 8}}\n",
       "stages[0].distill.teacher_logits: cached logits cannot feed hidden_loss"},
      {"model: /m\ndata: {train: /t}\nstages:\n  - distill: {student: {keep_every: 1}, steps: "
       "100, prune: {sparsity: 0.5, rounds: 3, recover_steps: 40}}\n",
       "stages[0].distill.prune.recover_steps: 3 rounds x 40 steps = 120 exceeds the stage's 100 "
       "steps"},
      {"model: /m\ndata: {train: /t}\nstages:\n  - distill: {student: {keep_every: 1}, prune: "
       "{sparsity: 1}}\n",
       "stages[0].distill.prune.sparsity: must be in (0, 1), got 1"},
      {"model: /m\ndata: {train: /t}\nstages:\n  - distill: {student: {keep_every: 1}, prune: "
       "{pattern: \"2:4\", rounds: 2}}\n",
       "stages[0].distill.prune.rounds: an n:m pattern is reached in one round"},
      {"model: /m\ndata: {train: /t}\nstages:\n  - distill: {student: {keep_every: 1}, prune: "
       "{method: sparsegpt, pattern: \"4:8\", rounds: 3}}\n",
       "stages[0].distill.prune.rounds: an n:m pattern is reached in one round"},
      {"model: /m\ndata: {train: /t}\nstages:\n  - distill: {student: {keep_every: 1}, prune: "
       "{method: sparsegpt, pattern: channels}}\n",
       "stages[0].distill.prune.pattern: sparsegpt zeros single weights"},
      {head + "stages:\n  - calibrate: {samples: 0}\n", "stages[0].calibrate.samples"},
      {"model: /m\nstages:\n  - calibrate: {}\n",
       "data.calibration: required by stages[0].calibrate"},
      {head + "stages:\n  - evaluate: {gate: {min_retention: 1.5}}\n",
       "stages[0].evaluate.gate.min_retention: must be between 0 and 1"},
      {head + "stages:\n  - evaluate: {window: 8, stride: 8}\n", "stages[0].evaluate.stride"},
      {head + "stages:\n  - evaluate: {dtype: int8}\n",
       "stages[0].evaluate.dtype: must be one of float32, bfloat16, float16"},
      {head + "stages:\n  - evaluate: {samples: {prompts: []}}\n",
       "stages[0].evaluate.samples.prompts: expected a list of 1 to 16 prompts"},
      {head + "stages:\n  - evaluate: {samples: {prompts: [\"a\", \"\"]}}\n",
       "stages[0].evaluate.samples.prompts[1]: expected a non-empty string"},
      {head + "stages:\n  - evaluate: {samples: {prompts: [a], max_new_tokens: 0}}\n",
       "stages[0].evaluate.samples.max_new_tokens"},
      {head + "stages:\n  - evaluate: {samples: {prompts: [a], temperature: 1}}\n",
       "stages[0].evaluate.samples.temperature: unknown field"},
      {head + "stages:\n  - quantize: {group_size: 0}\n", "stages[0].quantize.group_size"},
      {head + "stages:\n  - quantize: {gpus: -1}\n", "stages[0].quantize.gpus"},
      {head + "stages: []\n", "stages: expected a non-empty list"},
      {head + "stages:\n  - quantize: {}\nextra: 1\n", "extra: unknown field"},
      {"data: {evaluation: [/e]}\nstages:\n  - quantize: {}\n", "model: required"},
      {"model: /m\nstages:\n  - evaluate: {}\n", "data.evaluation: required by stages[0].evaluate"},
      {"model: /m\nstages: [\n", "not valid YAML"},
      {"- just\n- a list\n", "expected a mapping"},
  };
  for (const Case& c : cases) {
    auto r = ParseRecipe(c.yaml);
    ASSERT_FALSE(r.ok()) << c.yaml;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.expect), absl::string_view::npos)
        << "got: " << r.status().message() << "\nwant: " << c.expect;
  }
}

TEST(RecipeTest, InputsAreChecked) {
  auto r = ParseRecipe("model: /nonexistent/model\nstages:\n  - quantize: {}\n");
  ASSERT_TRUE(r.ok());
  auto s = CheckRecipeInputs(*r);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find("model:"), absl::string_view::npos);
  r = ParseRecipe("model: s3://bucket/model\nstages:\n  - quantize: {}\n");
  ASSERT_TRUE(r.ok());
  // An S3 model is checked in the store; without credentials that is a clear error, not a hang.
  ::unsetenv("AWS_ACCESS_KEY_ID");
  EXPECT_NE(CheckRecipeInputs(*r).message().find("model: S3 credentials"), absl::string_view::npos)
      << CheckRecipeInputs(*r).message();
  // A directory that is not a model.
  r = ParseRecipe("model: /tmp\nstages:\n  - quantize: {}\n");
  ASSERT_TRUE(r.ok());
  s = CheckRecipeInputs(*r);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("config.json"), absl::string_view::npos);
}

TEST(RecipeTest, GroupSizeMustFitTheModel) {
  const char* src = std::getenv("SQUEEZE_SOURCE_DIR");
  ASSERT_NE(src, nullptr);
  auto r =
      ParseRecipe(std::string("model: ") + src +
                  "/deploy/models/fortunes-teacher\nstages:\n  - quantize: {group_size: 96}\n");
  ASSERT_TRUE(r.ok()) << r.status();
  auto s = CheckRecipeInputs(*r);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find(
                "stages[0].quantize.group_size: must divide the model's hidden_size (256), got 96"),
            absl::string_view::npos)
      << s.message();
  r = ParseRecipe(std::string("model: ") + src +
                  "/deploy/models/fortunes-teacher\nstages:\n  - quantize: {}\n");
  EXPECT_TRUE(CheckRecipeInputs(*r).ok());
}

TEST(RecipeTest, MixedPrecisionTakesWidthsAndOneBudget) {
  auto r = ParseRecipe(R"(
model: /m
data: {calibration: /c}
stages:
  - quantize: {method: gptq, mixed_precision: {bits: [4, 2, 8], average_bits: 3.5}}
  - quantize: {mixed_precision: {max_size_bytes: 4000000}}
)");
  ASSERT_TRUE(r.ok()) << r.status();
  const v1::QuantizeStage& a = r->stages[0].options.quantize();
  ASSERT_TRUE(a.has_mixed_precision());
  EXPECT_EQ(std::vector<int>(a.mixed_precision().bits().begin(), a.mixed_precision().bits().end()),
            (std::vector<int>{2, 4, 8}));
  EXPECT_DOUBLE_EQ(a.mixed_precision().average_bits(), 3.5);
  EXPECT_EQ(a.format(), v1::QuantizeStage::FORMAT_GPTQ);
  const v1::QuantizeStage& b = r->stages[1].options.quantize();
  EXPECT_EQ(b.mixed_precision().bits_size(), 4) << "2, 3, 4 and 8 by default";
  EXPECT_EQ(b.mixed_precision().max_size_bytes(), 4000000);
  EXPECT_EQ(b.calibration().samples(), 128) << "RTN's sensitivities need calibration windows";
}

// A size budget below the model at its narrowest width is refused at submit, from its config.
TEST(RecipeTest, MixedPrecisionSizeBudgetMustFitTheModel) {
  const char* src = std::getenv("SQUEEZE_SOURCE_DIR");
  ASSERT_NE(src, nullptr);
  const std::string head = std::string("model: ") + src +
                           "/deploy/models/fortunes-teacher\ndata: {calibration: /c}\nstages:\n";
  auto r = ParseRecipe(head + "  - quantize: {mixed_precision: {max_size_bytes: 1000}}\n");
  ASSERT_TRUE(r.ok()) << r.status();
  auto s = CheckRecipeInputs(*r);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("stages[0].quantize.mixed_precision.max_size_bytes: 1000 is below "
                             "the smallest this model is stored in"),
            absl::string_view::npos)
      << s.message();
}

TEST(RecipeTest, SparseGptPrunesAloneOrInGptqsPass) {
  auto r = ParseRecipe(R"(
model: /m
data: {calibration: /c}
stages:
  - prune: {method: sparsegpt, pattern: "2:4", damp: 0.05, block_size: 64}
  - quantize: {method: gptq, prune: {pattern: "4:8"}}
)");
  ASSERT_TRUE(r.ok()) << r.status();
  const v1::PruneStage& p = r->stages[0].options.prune();
  EXPECT_EQ(p.target().method(), v1::PruneTarget::SPARSEGPT);
  EXPECT_EQ(p.target().pattern(), v1::PruneTarget::TWO_FOUR);
  EXPECT_DOUBLE_EQ(p.damp(), 0.05);
  EXPECT_EQ(p.block_size(), 64);
  const v1::QuantizeStage& q = r->stages[1].options.quantize();
  ASSERT_TRUE(q.has_prune());
  EXPECT_EQ(q.prune().method(), v1::PruneTarget::SPARSEGPT);
  EXPECT_EQ(q.prune().pattern(), v1::PruneTarget::FOUR_EIGHT);
  EXPECT_DOUBLE_EQ(q.prune().sparsity(), 0.5);
  // The distill schedule prunes with it too (on the training windows).
  auto d = ParseRecipe(
      "model: /m\ndata: {train: /t, calibration: /c}\nstages:\n  - distill: {student: "
      "{keep_every: 1}, prune: {method: sparsegpt}}\n");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->stages[0].options.distill().prune().target().method(), v1::PruneTarget::SPARSEGPT);
}

TEST(RecipeTest, Nf4TakesItsBlockAndDoubleQuantizationAndNothingOfGptqs) {
  auto r = ParseRecipe(
      "model: /m\nstages:\n  - quantize: {method: nf4}\n  - quantize: {method: fp4, "
      "group_size: 128, double_quant: false}\n");
  ASSERT_TRUE(r.ok()) << r.status();
  const v1::QuantizeStage& nf4 = r->stages[0].options.quantize();
  EXPECT_EQ(nf4.method(), v1::QuantizeStage::NF4);
  EXPECT_EQ(nf4.group_size(), 64);
  EXPECT_TRUE(nf4.double_quant());
  EXPECT_EQ(nf4.format(), v1::QuantizeStage::FORMAT_BITSANDBYTES);
  const v1::QuantizeStage& fp4 = r->stages[1].options.quantize();
  EXPECT_EQ(fp4.method(), v1::QuantizeStage::FP4);
  EXPECT_EQ(fp4.group_size(), 128);
  EXPECT_FALSE(fp4.double_quant());
  auto message = [](const std::string& stage) {
    auto bad = ParseRecipe("model: /m\nstages:\n  - quantize: " + stage + "\n");
    return bad.ok() ? std::string("ok") : std::string(bad.status().message());
  };
  EXPECT_NE(message("{method: nf4, bits: 8}").find("stages[0].quantize.bits: method nf4 is 4-bit"),
            std::string::npos);
  EXPECT_NE(message("{method: nf4, group_size: 48}")
                .find("stages[0].quantize.group_size: the absmax block must be a power of two"),
            std::string::npos);
  EXPECT_NE(message("{method: nf4, act_order: true}")
                .find("stages[0].quantize.act_order: method nf4 quantizes each weight"),
            std::string::npos);
  EXPECT_NE(message("{method: gptq, double_quant: true}")
                .find("stages[0].quantize.double_quant: is an nf4 / fp4 setting"),
            std::string::npos);
  EXPECT_NE(message("{method: nf4, format: gptq}").find("stages[0].quantize.format"),
            std::string::npos);
}

// Every example recipe in deploy/recipes parses and passes the submit-time checks against the
// example teacher and data it names.
TEST(RecipeTest, ExampleRecipesAreValid) {
  const char* src = std::getenv("SQUEEZE_SOURCE_DIR");
  ASSERT_NE(src, nullptr);
  const std::filesystem::path dir = std::filesystem::path(src) / "deploy/recipes";
  int checked = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() != ".yaml") continue;
    std::ifstream file(e.path());
    const std::string yaml((std::istreambuf_iterator<char>(file)), {});
    auto resolved = ResolveRecipePaths(yaml, dir.string());
    ASSERT_TRUE(resolved.ok()) << e.path() << ": " << resolved.status();
    auto r = ParseRecipe(*resolved);
    ASSERT_TRUE(r.ok()) << e.path() << ": " << r.status();
    EXPECT_TRUE(CheckRecipeInputs(*r).ok()) << e.path() << ": " << CheckRecipeInputs(*r);
    ++checked;
  }
  EXPECT_GE(checked, 8);
}

// Task files and the accuracy gate: parsed into the recipe, and the gate needs tasks.
TEST(RecipeTest, TaskFilesAndTheAccuracyGate) {
  auto r = ParseRecipe(
      "model: /m\ndata: {evaluation: e.jsonl, tasks: [t1.jsonl, t2.jsonl]}\nstages:\n"
      "  - evaluate: {max_task_questions: 50, gate: {min_accuracy_retention: 0.9}}\n");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->tasks, (std::vector<std::string>{"t1.jsonl", "t2.jsonl"}));
  EXPECT_EQ(r->stages[0].options.evaluate().max_task_questions(), 50);
  EXPECT_EQ(r->stages[0].options.evaluate().gate().min_accuracy_retention(), 0.9);
  auto no_tasks = ParseRecipe(
      "model: /m\ndata: {evaluation: e.jsonl}\nstages:\n"
      "  - evaluate: {gate: {min_accuracy_retention: 0.9}}\n");
  ASSERT_FALSE(no_tasks.ok());
  EXPECT_NE(no_tasks.status().message().find(
                "data.tasks: required by stages[0].evaluate.gate.min_accuracy_retention"),
            absl::string_view::npos)
      << no_tasks.status();
  auto bad = ParseRecipe(
      "model: /m\ndata: {evaluation: e.jsonl, tasks: {a: 1}}\nstages:\n"
      "  - evaluate: {}\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("data.tasks: expected a path or a list of paths"),
            absl::string_view::npos)
      << bad.status();
}

// A tokenizer.json the workers could not read is refused at submit, naming what it holds.
TEST(RecipeTest, UnsupportedTokenizerIsRefusedAtSubmit) {
  namespace fs = std::filesystem;
  const char* src = std::getenv("SQUEEZE_SOURCE_DIR");
  ASSERT_NE(src, nullptr);
  const fs::path model =
      fs::temp_directory_path() / ("tokenizer_check_" + std::to_string(::getpid()));
  fs::remove_all(model);
  fs::copy(std::string(src) + "/deploy/models/fortunes-teacher", model);
  std::ofstream(model / "tokenizer.json")
      << R"({"model": {"type": "BPE", "vocab": {"a": 0}}, "normalizer": {"type": "NFKD"}})";
  auto r = ParseRecipe("model: " + model.string() + "\nstages:\n  - quantize: {}\n");
  ASSERT_TRUE(r.ok()) << r.status();
  const absl::Status s = CheckRecipeInputs(*r);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("model: "), absl::string_view::npos) << s.message();
  EXPECT_NE(s.message().find("normalizer \"NFKD\" is not supported"), absl::string_view::npos)
      << s.message();
  fs::remove_all(model);
}

// config.json is checked against the checkpoint's tensors at submit, from the headers alone: a
// config that claims more layers or other shapes than the weights have is refused, naming a
// tensor.
TEST(RecipeTest, ConfigMustMatchTheCheckpointsTensors) {
  namespace fs = std::filesystem;
  const char* src = std::getenv("SQUEEZE_SOURCE_DIR");
  ASSERT_NE(src, nullptr);
  const fs::path model =
      fs::temp_directory_path() / ("config_vs_weights_" + std::to_string(::getpid()));
  fs::remove_all(model);
  fs::copy(std::string(src) + "/deploy/models/fortunes-teacher", model);
  auto with_config = [&](const std::string& key, int value) {
    std::ifstream in(std::string(src) + "/deploy/models/fortunes-teacher/config.json");
    nlohmann::json config = nlohmann::json::parse(in);
    config[key] = value;
    std::ofstream(model / "config.json", std::ios::trunc) << config.dump();
    auto r = ParseRecipe("model: " + model.string() + "\nstages:\n  - quantize: {}\n");
    EXPECT_TRUE(r.ok()) << r.status();
    return std::string(CheckRecipeInputs(*r).message());
  };
  EXPECT_NE(with_config("num_hidden_layers", 6)
                .find("config.json implies tensor \"model.layers.4.input_layernorm.weight\", "
                      "which the checkpoint does not have"),
            std::string::npos)
      << with_config("num_hidden_layers", 6);
  EXPECT_NE(with_config("intermediate_size", 512)
                .find("has shape [768, 256] but config.json implies [512, 256]"),
            std::string::npos)
      << with_config("intermediate_size", 512);
  fs::remove_all(model);
}

// Paths that make std::filesystem throw (a component over NAME_MAX) or that are not regular files
// are one-line errors naming the field, not exceptions.
TEST(RecipeTest, UnreadablePathsAreErrorsNamingTheField) {
  const char* src = std::getenv("SQUEEZE_SOURCE_DIR");
  ASSERT_NE(src, nullptr);
  const std::string model = std::string(src) + "/deploy/models/fortunes-teacher";
  const std::string long_name = "/tmp/" + std::string(300, 'x') + "/calib.jsonl";
  for (const std::string& calibration : {long_name, std::string("/dev/zero")}) {
    auto r = ParseRecipe("model: " + model + "\ndata: {calibration: " + calibration +
                         "}\nstages:\n  - quantize: {method: gptq}\n");
    ASSERT_TRUE(r.ok()) << r.status();
    const absl::Status s = CheckRecipeInputs(*r);
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(s.message().find("data.calibration: "), 0u) << s;
    EXPECT_EQ(s.message().find('\n'), absl::string_view::npos) << s;
  }
  auto r = ParseRecipe("model: /tmp/" + std::string(300, 'm') + "\nstages:\n  - quantize: {}\n");
  ASSERT_TRUE(r.ok());
  const absl::Status s = CheckRecipeInputs(*r);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.message().find("model: "), 0u) << s;
}

TEST(RecipeTest, DistillStudentsMustFitTheTeacher) {
  const char* src = std::getenv("SQUEEZE_SOURCE_DIR");
  ASSERT_NE(src, nullptr);
  const std::string head = std::string("model: ") + src +
                           "/deploy/models/fortunes-teacher\ndata: {train: " + src +
                           "/deploy/data/fortunes/train.jsonl}\nstages:\n  - distill: ";
  struct Case {
    std::string stage, expect;
  };
  const Case cases[] = {
      {"{student: {config: {vocab_size: 300}}}",
       "stages[0].distill.student.config.vocab_size: 300 differs from the teacher's vocabulary of "
       "264 tokens"},
      {"{student: {config: {hidden_size: 512, num_attention_heads: 8}}, hidden_loss: {layers: [[0, "
       "1]]}}",
       "stages[0].distill.hidden_loss.projection: the student is 512 wide and the teacher 256"},
      {"{student: {layers: [0, 9]}}",
       "stages[0].distill.student.layers: teacher layer 9 does not exist (the teacher has 4)"},
      {"{student: {keep_every: 2}, hidden_loss: {layers: [[3, 1]]}}",
       "stages[0].distill.hidden_loss.layers: [3, 1]: the student has 2 layers"},
      {"{student: {keep_every: 2}, teacher_logits: {top_k: 300}}",
       "stages[0].distill.teacher_logits.top_k: exceeds the teacher's vocabulary of 264 tokens"},
      {"{student: {keep_every: 2}, seq_len: 512}",
       "stages[0].distill.seq_len: exceeds the teacher's context of 256 tokens"},
  };
  for (const Case& c : cases) {
    auto r = ParseRecipe(head + c.stage + "\n");
    ASSERT_TRUE(r.ok()) << r.status();
    const absl::Status s = CheckRecipeInputs(*r);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.stage;
    EXPECT_NE(s.message().find(c.expect), absl::string_view::npos)
        << "got: " << s.message() << "\nwant: " << c.expect;
  }
  auto ok =
      ParseRecipe(head +
                  "{student: {keep_every: 2}, hidden_loss: {type: cosine, layers: [[1, 3]]}}\n"
                  "  - quantize: {group_size: 128}\n");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(CheckRecipeInputs(*ok).ok()) << CheckRecipeInputs(*ok);
}

// lora: what the parser can tell alone is refused there; targets, rank and whether the base is
// quantized are checked against the model at submit.
TEST(RecipeTest, LoraAdaptersAreCheckedAgainstTheModelAtSubmit) {
  const char* src = std::getenv("SQUEEZE_SOURCE_DIR");
  ASSERT_NE(src, nullptr);
  const std::string head = std::string("model: ") + src +
                           "/deploy/models/fortunes-teacher\ndata: {train: " + src +
                           "/deploy/data/fortunes/train.jsonl}\nstages:\n";
  const std::string nf4 = "  - quantize: {method: nf4}\n";
  std::string many_targets = "q_proj";
  for (int i = 1; i < 65; ++i) many_targets += ", q_proj";
  struct Case {
    std::string stages, expect;
  };
  const Case parse_errors[] = {
      {"  - distill: {lora: {targets: [q_proj], rank: 0}}\n",
       "stages[0].distill.lora.rank: must be positive, got 0"},
      {"  - distill: {lora: {targets: []}}\n",
       "stages[0].distill.lora.targets: expected a non-empty list of linear names"},
      {"  - distill: {student: {keep_every: 2}, lora: {targets: [q_proj]}}\n",
       "stages[0].distill.student: a stage with lora trains adapters on its input model; it takes "
       "no student"},
      {"  - distill: {lora: {targets: [q_proj]}, teacher: input}\n",
       "stages[0].distill.teacher: with lora the input model is the frozen base; it cannot teach "
       "itself"},
      {"  - distill: {lora: {targets: [q_proj]}, prune: {sparsity: 0.5}}\n",
       "stages[0].distill.prune: does not apply to a stage with lora"},
      {"  - distill: {lora: {targets: [q_proj], dropout: 1.5}}\n",
       "stages[0].distill.lora.dropout"},
      {"  - distill: {lora: {targets: [q_proj], rnk: 4}}\n", "stages[0].distill.lora.rnk"},
      {"  - distill: {lora: {targets: [" + many_targets + "]}}\n",
       "stages[0].distill.lora.targets: at most 64 names, got 65"},
  };
  for (const Case& c : parse_errors) {
    auto r = ParseRecipe(head + c.stages);
    ASSERT_FALSE(r.ok()) << c.stages;
    EXPECT_EQ(r.status().message().find(c.expect), 0u)
        << "got: " << r.status().message() << "\nwant: " << c.expect;
  }
  const Case check_errors[] = {
      {nf4 + "  - distill: {lora: {targets: [q_proj, qkv_proj]}}\n",
       "stages[1].distill.lora.targets[1]: \"qkv_proj\" names no linear of a decoder layer of this "
       "llama model"},
      {nf4 + "  - distill: {lora: {targets: [q_proj, v_proj], rank: 200}}\n",
       "stages[1].distill.lora.rank: 200 exceeds self_attn.v_proj's smaller dimension (128)"},
      {"  - distill: {lora: {targets: [q_proj]}}\n",
       "stages[0].distill.lora: the stage's input model is not quantized"},
      {nf4 + "  - prune: {method: magnitude, sparsity: 0.5}\n  - distill: {lora: {targets: "
             "[q_proj]}}\n",
       "stages[2].distill.lora: the stage's input model is not quantized"},
  };
  for (const Case& c : check_errors) {
    auto r = ParseRecipe(head + c.stages);
    ASSERT_TRUE(r.ok()) << r.status();
    const absl::Status s = CheckRecipeInputs(*r);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.stages;
    EXPECT_EQ(s.message().find(c.expect), 0u) << "got: " << s.message() << "\nwant: " << c.expect;
  }
  for (const std::string& ok :
       {nf4 + "  - distill: {lora: {targets: [q_proj, v_proj], rank: 128}}\n",
        std::string("  - distill: {lora: {targets: [down_proj], freeze_base: true}}\n")}) {
    auto r = ParseRecipe(head + ok);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(CheckRecipeInputs(*r).ok()) << CheckRecipeInputs(*r);
    const v1::DistillStage& d = r->stages.back().options.distill();
    EXPECT_TRUE(d.has_lora());
    EXPECT_EQ(d.teacher(), v1::DistillStage::ORIGINAL) << "the job's model teaches by default";
    EXPECT_TRUE(d.lora().gradient_checkpointing());
    EXPECT_EQ(d.lora().loss(), v1::LoraOptions::KD);
  }
}

TEST(RecipeTest, RelativePathsResolveAgainstTheRecipeDirectory) {
  auto text = ResolveRecipePaths(
      "model: ../models/t\ndata: {evaluation: [e.jsonl, /abs.jsonl], calibration: c.jsonl}\n"
      "stages:\n  - quantize: {}\n",
      "/recipes/x");
  ASSERT_TRUE(text.ok()) << text.status();
  auto r = ParseRecipe(*text);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model, "/recipes/models/t");
  EXPECT_EQ(r->evaluation, (std::vector<std::string>{"/recipes/x/e.jsonl", "/abs.jsonl"}));
  EXPECT_EQ(r->calibration, "/recipes/x/c.jsonl");
}

TEST(RecipeTest, W8A8DefaultsToInt8PerChannelInCompressedTensors) {
  auto r = ParseRecipe(R"(
model: /m
data: {calibration: /c}
stages:
  - quantize: {activations: static, smoothquant_alpha: 0.8, calibration_samples: 32}
  - quantize: {method: gptq, activations: dynamic}
)");
  ASSERT_TRUE(r.ok()) << r.status();
  const v1::QuantizeStage& a = r->stages[0].options.quantize();
  EXPECT_EQ(a.method(), v1::QuantizeStage::RTN);
  EXPECT_EQ(a.bits(), 8);
  EXPECT_EQ(a.group_size(), -1);
  EXPECT_TRUE(a.sym());
  EXPECT_EQ(a.format(), v1::QuantizeStage::FORMAT_COMPRESSED_TENSORS);
  EXPECT_EQ(a.activations().mode(), v1::ActivationQuantization::STATIC_PER_TENSOR);
  EXPECT_DOUBLE_EQ(a.activations().smoothquant_alpha(), 0.8);
  EXPECT_EQ(a.calibration().samples(), 32) << "static scales sample calibration windows";
  const v1::QuantizeStage& b = r->stages[1].options.quantize();
  EXPECT_EQ(b.method(), v1::QuantizeStage::GPTQ);
  EXPECT_EQ(b.activations().mode(), v1::ActivationQuantization::DYNAMIC_PER_TOKEN);
  EXPECT_FALSE(b.activations().has_smoothquant_alpha());
  // Weight-only int8 in the same layout, when asked for.
  auto w8 = ParseRecipe(
      "model: /m\nstages:\n  - quantize: {bits: 8, group_size: -1, sym: true, format: "
      "compressed_tensors}\n");
  ASSERT_TRUE(w8.ok()) << w8.status();
  EXPECT_EQ(w8->stages[0].options.quantize().activations().mode(),
            v1::ActivationQuantization::NONE);
}

TEST(RecipeTest, AwqTakesItsSearchSettingsAndACalibrationSample) {
  auto r = ParseRecipe(R"(
model: /m
data: {calibration: /c}
stages:
  - quantize: {method: awq, bits: 4, group_size: 64, grid: 10, clip: false, max_shrink: 0.3,
               calibration_samples: 16, calibration_seq_len: 128}
)");
  ASSERT_TRUE(r.ok()) << r.status();
  const v1::QuantizeStage& q = r->stages[0].options.quantize();
  EXPECT_EQ(q.method(), v1::QuantizeStage::AWQ);
  EXPECT_EQ(q.awq().grid(), 10);
  EXPECT_FALSE(q.awq().clip());
  EXPECT_DOUBLE_EQ(q.awq().max_shrink(), 0.3);
  EXPECT_EQ(q.calibration().samples(), 16);
  EXPECT_EQ(q.calibration().seq_len(), 128);
  EXPECT_EQ(q.format(), v1::QuantizeStage::FORMAT_AWQ_GEMM) << "4-bit AWQ defaults to its layout";
  auto three = ParseRecipe(
      "model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {method: awq, bits: 3}\n");
  ASSERT_TRUE(three.ok()) << three.status();
  EXPECT_EQ(three->stages[0].options.quantize().format(), v1::QuantizeStage::FORMAT_GPTQ);
  auto as_gptq = ParseRecipe(
      "model: /m\ndata: {calibration: /c}\nstages:\n  - quantize: {method: awq, format: gptq}\n");
  ASSERT_TRUE(as_gptq.ok()) << as_gptq.status();
  EXPECT_EQ(as_gptq->stages[0].options.quantize().format(), v1::QuantizeStage::FORMAT_GPTQ);
}

}  // namespace
}  // namespace squeeze

namespace squeeze {
namespace {

TEST(RecipeTest, SymmetricByDefaultInTheGptqLayoutAsymmetricForAwq) {
  auto r = ParseRecipe(R"(
model: /m
data: {calibration: /c}
stages:
  - quantize: {method: gptq}
  - quantize: {method: rtn}
  - quantize: {method: awq}
  - quantize: {method: gptq, sym: false}
)");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->stages[0].options.quantize().sym()) << "vLLM's Marlin GPTQ kernels take sym";
  EXPECT_TRUE(r->stages[1].options.quantize().sym());
  EXPECT_FALSE(r->stages[2].options.quantize().sym()) << "AWQ stores zero points";
  EXPECT_FALSE(r->stages[3].options.quantize().sym()) << "an explicit choice is kept";
  EXPECT_FALSE(r->stages[0].options.quantize().dense_fallback());
}

TEST(RecipeTest, DenseFallbackIsAGptqLayoutChoice) {
  auto ok = ParseRecipe("model: /m\nstages:\n  - quantize: {dense_fallback: true}\n");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(ok->stages[0].options.quantize().dense_fallback());
  auto bad = ParseRecipe(
      "model: /m\nstages:\n  - quantize: {method: awq, bits: 4, dense_fallback: true}\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message().find("stages[0].quantize.dense_fallback: "), 0u) << bad.status();
}

// A one-layer model whose MLP (80 wide) fills 32-bit words at 4 and 8 bits but not at 3.
std::string WriteModelWithAnOddMlp() {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("odd_mlp_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}},
                           {"model_type", "llama"},
                           {"hidden_size", 64},
                           {"intermediate_size", 80},
                           {"num_attention_heads", 4},
                           {"num_key_value_heads", 2},
                           {"head_dim", 16},
                           {"num_hidden_layers", 1},
                           {"vocab_size", 32},
                           {"max_position_embeddings", 64},
                           {"rms_norm_eps", 1e-5},
                           {"rope_theta", 10000.0},
                           {"tie_word_embeddings", true},
                           {"torch_dtype", "float32"}};
  std::ofstream(dir / "config.json") << config.dump();
  SafetensorsWriter w;
  auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> zeros(n);
    EXPECT_TRUE(w.Add(name, DType::kF32, shape, zeros.data(), zeros.size() * 4).ok()) << name;
  };
  add("model.embed_tokens.weight", {32, 64});
  add("model.norm.weight", {64});
  const std::string l = "model.layers.0.";
  add(l + "input_layernorm.weight", {64});
  add(l + "post_attention_layernorm.weight", {64});
  add(l + "self_attn.q_proj.weight", {64, 64});
  add(l + "self_attn.k_proj.weight", {32, 64});
  add(l + "self_attn.v_proj.weight", {32, 64});
  add(l + "self_attn.o_proj.weight", {64, 64});
  add(l + "mlp.gate_proj.weight", {80, 64});
  add(l + "mlp.up_proj.weight", {80, 64});
  add(l + "mlp.down_proj.weight", {64, 80});
  EXPECT_TRUE(w.WriteFile((dir / "model.safetensors").string()).ok());
  return dir.string();
}

TEST(RecipeTest, ShapesTheGptqLayoutCannotPackAreRefusedAtSubmitNamingTheLinear) {
  const std::string model = WriteModelWithAnOddMlp();
  auto check = [&](const std::string& stage) {
    auto r = ParseRecipe("model: " + model + "\nstages:\n  - quantize: " + stage + "\n");
    EXPECT_TRUE(r.ok()) << r.status();
    return CheckRecipeInputs(*r);
  };
  EXPECT_TRUE(check("{bits: 4, group_size: 16}").ok()) << check("{bits: 4, group_size: 16}");
  const absl::Status odd = check("{bits: 3, group_size: 16}");
  ASSERT_FALSE(odd.ok());
  EXPECT_EQ(odd.message().find("stages[0].quantize: mlp.gate_proj at 3 bits"), 0u) << odd;
  EXPECT_NE(odd.message().find("dense_fallback: true"), std::string::npos) << odd;
  EXPECT_TRUE(check("{bits: 3, group_size: 16, dense_fallback: true}").ok())
      << check("{bits: 3, group_size: 16, dense_fallback: true}");
  std::filesystem::remove_all(model);
}

}  // namespace
}  // namespace squeeze
