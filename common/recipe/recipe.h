// A compression job's recipe (YAML): the model, the data and the stages. Parsing validates every
// field before a job is accepted, and every error names the field's path:
//   stages[2].quantize.bits: must be one of 2, 3, 4, 8
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/model/llama_config.h"
#include "squeeze/v1/stages.pb.h"

namespace squeeze {

struct StageSpec {
  std::string kind;          // "evaluate", "quantize": StageKind(options)
  v1::StageOptions options;  // the stage's options, every default filled in
  int gpus = 0;              // GPUs each rank needs; 0 runs anywhere (CPU or GPU)
  int workers = 1;           // ranks leased together (gang)
  int max_attempts = 0;      // 0: the recipe's (or the service's) default
  int64_t timeout_ms = 0;    // `timeout`: an attempt running longer is killed; 0: no limit
};

struct Recipe {
  std::string model;  // URI as written (file:///path or a plain path)
  std::string calibration;
  std::string train;  // text a distill stage trains on
  std::vector<std::string> evaluation;
  std::vector<std::string> tasks;  // multiple-choice task files, scored by evaluate stages
  std::vector<StageSpec> stages;
  int max_attempts = 3;
};

// What a recipe may be, whoever sends it. The defaults are generous for real recipes (a few KB
// with a handful of stages) and small against the gRPC message limit, so that every job the
// coordinator accepts can be read back by its clients.
struct RecipeLimits {
  int64_t max_bytes = int64_t{1} << 20;  // --max-recipe-bytes
  int64_t max_stages = 64;               // --max-stages
};

// YAML aliases and keys repeated in one mapping are errors, as is anything not UTF-8.
absl::StatusOr<Recipe> ParseRecipe(absl::string_view yaml, const RecipeLimits& limits = {});

// The local path of a file:// URI or plain path; InvalidArgument naming `field` for other schemes.
absl::StatusOr<std::string> LocalPathOf(absl::string_view uri, absl::string_view field);

// Rewrites relative local paths of the recipe (model, data) to absolute paths under `base_dir`,
// so that a recipe can name files beside it. Other fields are untouched.
absl::StatusOr<std::string> ResolveRecipePaths(absl::string_view yaml, const std::string& base_dir);

// Rewrites the model and the data file fields of the recipe (model, data.calibration, data.train,
// data.evaluation[i], data.tasks[i]) with `rewrite(field, value)`: how a client swaps its local
// files for their copies in the store. The first error `rewrite` returns is returned.
using DataRewrite =
    std::function<absl::StatusOr<std::string>(const std::string& field, const std::string& value)>;
absl::StatusOr<std::string> RewriteRecipeData(absl::string_view yaml, const DataRewrite& rewrite);

// Checks what the recipe points at: the model directory holds a readable config.json and
// weights, the data files exist. Errors name the recipe field ("model: ...").
absl::Status CheckRecipeInputs(const Recipe& recipe);

// The architecture of a distill stage's student: its `student` options (keep_every, layers or
// config overrides) applied to the teacher's config.
LlamaConfig DistillStudentConfig(const v1::StudentSpec& student, const LlamaConfig& teacher);

// The kind of stage `options` holds, as recipes name it ("quantize"); empty when none.
std::string StageKind(const v1::StageOptions& options);

}  // namespace squeeze
