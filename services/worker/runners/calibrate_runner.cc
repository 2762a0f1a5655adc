// calibrate: calibration windows and per-linear statistics, cached by their inputs' digests.
#include "services/worker/runners/runners.h"
#include "services/worker/runners/stage_io.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/base/file_util.h"
#include "common/base/sha256.h"
#include "common/base/status_macros.h"
#include "common/compress/quantized_checkpoint.h"
#include "common/compress/sequential_quantizer.h"
#include "common/compress/streaming_quantizer.h"
#include "common/data/text_dataset.h"
#include "common/model/llama_model.h"
#include "common/recipe/recipe.h"
#include "common/tensor/torch_tensor.h"

namespace squeeze::worker {

namespace fs = std::filesystem;

namespace {

// Records H, input norms and absmax for every linear layer it sees.
class StatisticsObserver : public LinearObserver {
 public:
  explicit StatisticsObserver(at::Device device) : device_(device) {}
  void OnLinearInput(int64_t, absl::string_view name, const at::Tensor& input) override {
    const std::string key(name);
    at::Tensor x = input.reshape({-1, input.size(-1)}).to(at::kFloat);
    auto it = hessians_.find(key);
    if (it == hessians_.end()) {
      it = hessians_.emplace(key, HessianAccumulator(x.size(1), device_)).first;
      absmax_[key] = at::zeros({x.size(1)}, x.options());
    }
    it->second.Add(x);
    absmax_[key] = at::maximum(absmax_[key], std::get<0>(x.abs().max(0)));
  }
  absl::Status Write(SafetensorsWriter& writer) {
    for (auto& [name, acc] : hessians_) {
      // ||x_j||_2 over all calibration tokens: from H's diagonal, H_jj = 2 sum x_j^2 / n.
      at::Tensor norms = at::sqrt(acc.hessian().diagonal() * (acc.samples() / 2.0));
      for (auto [suffix, t] :
           {std::pair{".hessian", acc.hessian()}, std::pair{".input_norm", norms},
            std::pair{".absmax", absmax_.at(name)}}) {
        if (auto s = AddTensor(writer, name + suffix, t); !s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }

 private:
  at::Device device_;
  std::map<std::string, HessianAccumulator> hessians_;
  std::map<std::string, at::Tensor> absmax_;
};

}  // namespace

absl::StatusOr<TaskOutput> CalibrateRunner::Run(TaskContext& ctx) {
  SQ_RETURN_IF_ERROR(ExpectStage(ctx, v1::StageOptions::kCalibrate));
  const v1::CalibrationSample& sample = ctx.stage().calibrate().sample();
  auto model_dir = InputModel(ctx);
  if (!model_dir.ok()) return model_dir.status();
  auto data_path = DataFile(ctx, ctx.data().calibration(), "data.calibration");
  if (!data_path.ok()) return data_path.status();
  auto model = LoadModel(*model_dir, at::kFloat, at::kCPU);
  if (!model.ok()) return model.status();
  CalibrationOptions co;
  co.num_samples = sample.samples();
  co.seq_len = std::min<int64_t>(sample.seq_len(), model->config().max_position_embeddings);
  co.seed = sample.seed();

  auto model_digest = ModelDigest(*model_dir);
  if (!model_digest.ok()) return model_digest.status();
  auto data_digest = Sha256File(*data_path);
  if (!data_digest.ok()) return data_digest.status();
  const std::string key = Sha256Hex(
      absl::StrCat("model=", *model_digest, " data=", *data_digest, " samples=", co.num_samples,
                   " seq_len=", co.seq_len, " seed=", co.seed, " v=1"));
  // Shared between jobs under the store root, keyed by the inputs' digests.
  const std::string uri = absl::StrCat(ctx.data().store_root(), "/calibration/", key);
  TaskOutput out;
  out.outputs["calibration"] = uri;
  v1::CalibrateResult& result = *out.result.mutable_calibrate();
  result.set_key(key);
  result.set_model_digest(*model_digest);
  result.set_data_digest(*data_digest);
  result.set_samples(co.num_samples);
  result.set_seq_len(co.seq_len);
  result.set_seed(co.seed);
  if (auto exists = ctx.store().Exists(uri); exists.ok() && *exists) {
    ctx.Log(absl::StrCat("reusing calibration ", key.substr(0, 12)));
    result.set_reused(true);
    return out;
  }

  auto data = LoadTextDatasetForModel(*model_dir, model->config(), *data_path);
  if (!data.ok()) return data.status();
  auto windows = SampleCalibration(*data, co);
  if (!windows.ok()) return windows.status();
  const fs::path dir = fs::path(ctx.scratch_dir()) / "calibration";
  RemoveTree(dir).IgnoreError();
  fs::create_directories(dir);
  {
    SafetensorsWriter w;
    w.SetMetadata("key", key);
    if (auto s = AddTensor(w, "input_ids", *windows); !s.ok()) return s;
    if (auto s = w.WriteFile((dir / "windows.safetensors").string()); !s.ok()) return s;
  }
  // The uncompressed model, layer by layer on the device, statistics of every linear's inputs.
  c10::NoGradGuard no_grad;
  const int64_t batch = 16;
  at::Tensor hidden = EmbedWindows(*model, *windows, ctx.device(), batch);
  const RotaryTables rope = model->Rotary(windows->size(1), ctx.device(), at::kFloat);
  for (int64_t i = 0; i < model->num_layers(); ++i) {
    if (auto s = ctx.CheckStep(); !s.ok()) return s;
    DecoderLayer layer = model->layer(i).To(ctx.device(), at::kFloat);
    StatisticsObserver observer(ctx.device());
    hidden = RunLayerBatched(model->config(), layer, hidden, rope, i, batch, &observer);
    if (!at::isfinite(hidden).all().item<bool>()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.layers.", i, ": activations are not finite"));
    }
    SafetensorsWriter w;
    if (auto s = observer.Write(w); !s.ok()) return s;
    if (auto s = w.WriteFile((dir / absl::StrCat("layer-", i, ".safetensors")).string()); !s.ok())
      return s;
    ctx.SetProgress(i + 1, model->num_layers(), v1::PROGRESS_UNIT_LAYERS);
  }
  if (auto s = ctx.store().PutDirectory(dir.string(), uri, ctx.provenance()); !s.ok()) return s;
  result.set_reused(false);
  return out;
}

}  // namespace squeeze::worker
