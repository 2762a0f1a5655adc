// The planner alone: tasks, options and input bindings from a recipe, with no scheduler.
#include "services/coordinator/job_planner.h"

#include <nlohmann/json.hpp>

#include "gtest/gtest.h"

namespace squeeze::coordinator {
namespace {

Recipe Parse(const std::string& yaml) {
  auto r = ParseRecipe(yaml);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : Recipe();
}

// name -> "task N output" or the URI.
std::map<std::string, std::string> Bindings(const v1::TaskRecord& t) {
  std::map<std::string, std::string> out;
  for (const v1::InputBinding& b : t.bindings()) {
    out[b.name()] = b.has_task_output() ? "task " + std::to_string(b.task_output().task_index()) +
                                              " " + b.task_output().output()
                                        : b.uri();
  }
  return out;
}

TEST(JobPlannerTest, EvaluateQuantizeEvaluate) {
  const Recipe recipe = Parse(
      "model: /models/teacher\ndata: {evaluation: [/data/eval.jsonl]}\nmax_attempts: 4\n"
      "stages:\n  - evaluate: {}\n  - quantize: {bits: 4, max_attempts: 2, timeout: 1h}\n"
      "  - evaluate: {gate: {min_retention: 0.5}}\n");
  const auto tasks = PlanJob(recipe, "job-1", "file:///store");
  ASSERT_EQ(tasks.size(), 3u);
  EXPECT_EQ(tasks[1].task().id(), "job-1-t1");
  EXPECT_EQ(tasks[1].task().state(), v1::TASK_PENDING);
  EXPECT_EQ(tasks[1].task().depends_on(0), 0);
  EXPECT_EQ(tasks[0].task().max_attempts(), 4) << "the recipe's default";
  EXPECT_EQ(tasks[1].task().max_attempts(), 2) << "the stage's own";
  EXPECT_EQ(tasks[1].timeout_ms(), 3600000);
  EXPECT_EQ(tasks[1].output_uri(), "file:///store/jobs/job-1/1-quantize");
  EXPECT_EQ(tasks[1].checkpoint_uri(), "file:///store/jobs/job-1/1-quantize.checkpoint");
  EXPECT_EQ(Bindings(tasks[0]), (std::map<std::string, std::string>{{"model", "/models/teacher"}}));
  EXPECT_EQ(Bindings(tasks[1]), (std::map<std::string, std::string>{{"model", "/models/teacher"}}));
  EXPECT_EQ(Bindings(tasks[2]), (std::map<std::string, std::string>{{"model", "task 1 model"}}))
      << "the last evaluation measures the quantized model";
  EXPECT_EQ(tasks[0].baseline_task(), -1);
  EXPECT_EQ(tasks[2].baseline_task(), 0) << "compared with the first evaluation";
  EXPECT_EQ(tasks[1].stage().quantize().bits(), 4);
  EXPECT_EQ(tasks[1].data().store_root(), "file:///store");
}

TEST(JobPlannerTest, CalibrationModelsAndTeacherFlowFromTheRightStages) {
  const Recipe recipe = Parse(
      "model: /m\ndata: {calibration: /c.jsonl, train: /t.jsonl, evaluation: [/e.jsonl]}\n"
      "stages:\n  - calibrate: {}\n  - quantize: {method: gptq, bits: 4}\n"
      "  - prune: {method: magnitude, sparsity: 0.5}\n"
      "  - distill: {student: {keep_every: 1}, teacher: original, steps: 10}\n"
      "  - evaluate: {}\n");
  const auto tasks = PlanJob(recipe, "j", "s3://b/store");
  ASSERT_EQ(tasks.size(), 5u);
  EXPECT_TRUE(tasks[0].stage().has_calibrate());
  EXPECT_EQ(tasks[0].data().store_root(), "s3://b/store");
  EXPECT_EQ(tasks[0].data().calibration(), "/c.jsonl");
  EXPECT_EQ(tasks[3].data().train(), "/t.jsonl");
  EXPECT_EQ(Bindings(tasks[1]), (std::map<std::string, std::string>{
                                    {"model", "/m"}, {"calibration", "task 0 calibration"}}));
  EXPECT_EQ(Bindings(tasks[2]),
            (std::map<std::string, std::string>{{"model", "task 1 model"},
                                                {"calibration", "task 0 calibration"}}));
  EXPECT_EQ(
      Bindings(tasks[3]),
      (std::map<std::string, std::string>{
          {"model", "task 2 model"}, {"calibration", "task 0 calibration"}, {"teacher", "/m"}}))
      << "teacher: original is the recipe's model";
  EXPECT_EQ(Bindings(tasks[4]).at("model"), "task 3 model");
  EXPECT_EQ(tasks[4].baseline_task(), -1) << "no evaluation before it";
}

TEST(JobPlannerTest, APlanIsAFunctionOfItsInputs) {
  const Recipe recipe =
      Parse("model: /m\nstages:\n  - quantize: {bits: 8}\n  - quantize: {bits: 4}\n");
  const auto a = PlanJob(recipe, "j", "file:///s"), b = PlanJob(recipe, "j", "file:///s");
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_EQ(a[i].SerializeAsString(), b[i].SerializeAsString());
  EXPECT_EQ(StageOutputs("quantize"), std::vector<std::string>{"model"});
  EXPECT_TRUE(StageOutputs("no-such-stage").empty());
}

}  // namespace
}  // namespace squeeze::coordinator
