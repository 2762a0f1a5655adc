#include "services/coordinator/job_planner.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "services/coordinator/state_transitions.h"

namespace squeeze::coordinator {
namespace {

v1::InputBinding FromTask(const std::string& name, int task, const std::string& output) {
  v1::InputBinding b;
  b.set_name(name);
  b.mutable_task_output()->set_task_index(task);
  b.mutable_task_output()->set_output(output);
  return b;
}

v1::InputBinding FromUri(const std::string& name, const std::string& uri) {
  v1::InputBinding b;
  b.set_name(name);
  b.set_uri(uri);
  return b;
}

}  // namespace

std::vector<std::string> StageOutputs(const std::string& kind) {
  static const auto* outputs = new std::map<std::string, std::vector<std::string>>{
      {"quantize", {"model"}},        {"prune", {"model"}},         {"distill", {"model"}},
      {"calibrate", {"calibration"}}, {"evaluate", {"evaluation"}},
  };
  auto it = outputs->find(kind);
  return it == outputs->end() ? std::vector<std::string>{} : it->second;
}

std::vector<v1::TaskRecord> PlanJob(const Recipe& recipe, const std::string& job_id,
                                    const std::string& store_root) {
  const std::string job_root = absl::StrCat(store_root, "/jobs/", job_id);
  std::vector<v1::TaskRecord> tasks;
  // The latest producer of each output so far: a stage works on the latest model produced
  // before it (the recipe's model before any), and on the latest calibration.
  std::map<std::string, int> latest;
  int first_evaluation = -1;
  for (size_t i = 0; i < recipe.stages.size(); ++i) {
    const StageSpec& stage = recipe.stages[i];
    const int index = static_cast<int>(i);
    v1::TaskRecord t;
    v1::Task* task = t.mutable_task();
    task->set_id(absl::StrCat(job_id, "-t", i));
    task->set_index(index);
    task->set_kind(stage.kind);
    MoveTask(*task, v1::TASK_PENDING).IgnoreError();  // a new task: always allowed
    task->set_max_attempts(stage.max_attempts > 0 ? stage.max_attempts : recipe.max_attempts);
    if (i > 0) task->add_depends_on(index - 1);
    *t.mutable_stage() = stage.options;
    v1::JobData& data = *t.mutable_data();
    data.set_calibration(recipe.calibration);
    data.set_train(recipe.train);
    for (const std::string& e : recipe.evaluation) data.add_evaluation(e);
    for (const std::string& e : recipe.tasks) data.add_tasks(e);
    data.set_store_root(store_root);
    t.set_gpus(stage.gpus);
    t.set_world_size(stage.workers);
    t.set_timeout_ms(stage.timeout_ms);
    t.set_output_uri(absl::StrCat(job_root, "/", i, "-", stage.kind));
    t.set_checkpoint_uri(absl::StrCat(job_root, "/", i, "-", stage.kind, ".checkpoint"));

    *t.add_bindings() = latest.count("model") ? FromTask("model", latest["model"], "model")
                                              : FromUri("model", recipe.model);
    if (latest.count("calibration"))
      *t.add_bindings() = FromTask("calibration", latest["calibration"], "calibration");
    if (stage.options.has_distill() &&
        stage.options.distill().teacher() == v1::DistillStage::ORIGINAL)
      *t.add_bindings() = FromUri("teacher", recipe.model);
    t.set_baseline_task(first_evaluation);

    for (const std::string& output : StageOutputs(stage.kind)) latest[output] = index;
    if (stage.kind == "evaluate" && first_evaluation < 0) first_evaluation = index;
    tasks.push_back(std::move(t));
  }
  return tasks;
}

}  // namespace squeeze::coordinator
