// Turns a validated recipe into a job's tasks: a pure function of the recipe, the job's id and
// the store root. Each task gets its options, its place in the store, and a binding for each of
// its inputs (an earlier task's output, or a URI from the recipe); the scheduler runs the result
// without knowing what any stage kind does.
#pragma once

#include <string>
#include <vector>

#include "common/recipe/recipe.h"
#include "squeeze/v1/state.pb.h"

namespace squeeze::coordinator {

// What a stage kind produces, by output name: the one table a new stage kind adds a row to.
//   quantize, prune, distill -> "model";  calibrate -> "calibration";  evaluate -> "evaluation"
std::vector<std::string> StageOutputs(const std::string& kind);

// The job's tasks, in order, PENDING; each depends on the one before. `max_attempts` of a stage
// falls back to the recipe's.
std::vector<v1::TaskRecord> PlanJob(const Recipe& recipe, const std::string& job_id,
                                    const std::string& store_root);

}  // namespace squeeze::coordinator
