#include "common/train/teacher_logits_cache.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/sha256.h"
#include "common/tensor/safetensors.h"
#include "common/tensor/torch_tensor.h"

namespace squeeze {
namespace {

std::vector<int64_t> Shape(const TeacherLogitsPlan& p) {
  return {p.steps, p.grad_accum, p.rows(), p.seq_len, p.top_k};
}

}  // namespace

std::string TeacherLogitsCache::Key(const std::string& model_digest, const std::string& data_digest,
                                    const TeacherLogitsPlan& p) {
  return Sha256Hex(absl::StrCat(model_digest, "|", data_digest, "|", p.seq_len, "|", p.batch_size,
                                "|", p.grad_accum, "|", p.world_size, "|", p.rank, "|", p.seed, "|",
                                p.steps, "|", p.top_k));
}

absl::StatusOr<TeacherLogitsCache> TeacherLogitsCache::Compute(
    const LlamaModel& teacher, const WindowSampler& sampler, const TeacherLogitsPlan& plan,
    const std::function<absl::Status(int64_t step)>& on_step) {
  TeacherLogitsCache cache;
  const int64_t rows = plan.rows();
  if (rows <= 0 || plan.top_k <= 0)
    return absl::InvalidArgumentError("teacher logits: no rows or no k in the plan");
  cache.values_ = at::empty(Shape(plan), at::kBFloat16);
  cache.indices_ = at::empty(Shape(plan), at::kInt);
  for (int64_t step = 0; step < plan.steps; ++step) {
    if (on_step) {
      if (auto s = on_step(step); !s.ok()) return s;
    }
    for (int64_t micro = 0; micro < plan.grad_accum; ++micro) {
      const TopKLogits t =
          TeacherTopK(teacher, sampler.Batch(step, micro, rows, plan.rank * rows), plan.top_k);
      cache.values_[step][micro].copy_(t.values);
      cache.indices_[step][micro].copy_(t.indices);
    }
  }
  return cache;
}

absl::Status TeacherLogitsCache::Write(const std::string& path) const {
  SafetensorsWriter writer;
  if (auto s = AddTensor(writer, "values", values_); !s.ok()) return s;
  if (auto s = AddTensor(writer, "indices", indices_); !s.ok()) return s;
  return writer.WriteFile(path);
}

absl::StatusOr<TeacherLogitsCache> TeacherLogitsCache::Read(const std::string& path,
                                                            const TeacherLogitsPlan& plan) {
  auto file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  TeacherLogitsCache cache;
  for (auto [name, out] :
       {std::pair{"values", &cache.values_}, std::pair{"indices", &cache.indices_}}) {
    auto view = (*file)->Get(name);
    if (!view.ok()) return view.status();
    auto t = ToTorch(*view);
    if (!t.ok()) return t.status();
    *out = t->clone();  // the file's mapping goes away with `file`
  }
  if (cache.values_.sizes() != at::IntArrayRef(Shape(plan)) ||
      cache.indices_.sizes() != cache.values_.sizes())
    return absl::DataLossError(absl::StrCat(path, ": cached logits have the wrong shape for ",
                                            plan.steps, " steps of top-", plan.top_k));
  return cache;
}

}  // namespace squeeze
