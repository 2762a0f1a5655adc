// Weight pruning: which weights of a linear layer to zero, and the masks that keep them zero.
//
//   magnitude  score |W_ij|
//   wanda      score |W_ij| * ||X_j||_2, the weight times the L2 norm of its input feature over
//              calibration tokens (Sun et al. 2023, "A Simple and Effective Pruning Approach for
//              Large Language Models"), which needs no weight update and no Hessian.
//
// Unstructured sparsity is chosen per output row (each row loses the same fraction, as Wanda
// does); 2:4 keeps the 2 highest scores of every 4 consecutive inputs, the pattern sparse tensor
// cores accelerate. Masks are cumulative: a weight pruned once stays pruned, so an iterative
// schedule (prune a little, recover, prune more) only ever grows the zeros.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/compress/gptq.h"
#include "common/data/text_dataset.h"
#include "common/model/llama_model.h"

namespace squeeze {

// kSparseGpt chooses masks and updates the kept weights layer by layer on calibration Hessians
// (SequentialOptions::Method::kSparseGpt), so it is not a score: PruneScores refuses it, and
// SparsityMasks::Prune runs the sequential pass for it.
enum class PruneMethod { kMagnitude, kWanda, kSparseGpt };
// kMlpChannels and kAttentionHeads remove whole MLP channels or attention head groups rather than
// masking weights (PruneMlpChannels, PruneAttentionHeads).
// k4of8 is SparseGPT's only.
enum class PrunePattern { kUnstructured, k2of4, kMlpChannels, kAttentionHeads, k4of8 };

absl::StatusOr<PruneMethod> ParsePruneMethod(absl::string_view name);
absl::StatusOr<PrunePattern> ParsePrunePattern(absl::string_view name);

// Per-weight importance. `input_norms` [in_features] is required for Wanda, ignored otherwise.
at::Tensor PruneScores(PruneMethod method, const at::Tensor& weight,
                       const at::Tensor& input_norms = {});

// The keep-mask (bool, the weight's shape) at `sparsity` of each row, never keeping what
// `keep_so_far` (optional, bool) already dropped. For 2:4 the sparsity is 0.5 by construction and
// `sparsity` must be 0.5. `name` is used in errors.
absl::StatusOr<at::Tensor> PruneMask(const at::Tensor& scores, double sparsity,
                                     PrunePattern pattern, const at::Tensor& keep_so_far,
                                     absl::string_view name);

// L2 norm of every linear layer's input features over the calibration windows, keyed by
// "model.layers.N.<linear>" (q/k/v share one input, as do gate/up).
std::map<std::string, at::Tensor> LinearInputNorms(const LlamaModel& model,
                                                   const std::vector<at::Tensor>& batches);

// SparseGPT's rule for a pattern: `sparsity` of each block (unstructured), 2 of 4 or 4 of 8;
// InvalidArgument for the structured patterns.
absl::StatusOr<SparsityRule> SparsityRuleOf(PrunePattern pattern, double sparsity);

// The fixed zeros of a model's linear layers: masks the optimizer's updates are multiplied by.
class SparsityMasks {
 public:
  // Masks of the weights that hold zeros now (a pruned model loaded or resumed).
  static SparsityMasks FromZeros(LlamaModel& model);

  // Prunes every linear layer of `model` to `sparsity` (cumulatively with the current masks) and
  // zeros the pruned weights. `batches` ([B, L] token ids) feed Wanda's input norms and
  // SparseGPT's Hessians (unused by magnitude). SparseGPT also updates the kept weights, in
  // place: the model's tensors stay the ones an optimizer holds.
  absl::Status Prune(LlamaModel& model, PruneMethod method, PrunePattern pattern, double sparsity,
                     const std::vector<at::Tensor>& batches);

  // Re-zeros the pruned weights (after an optimizer step moved them).
  void Apply();
  // Masked matrices, and the fraction of their weights that is pruned.
  size_t size() const { return masks_.size(); }
  double Sparsity() const;

 private:
  struct Entry {
    std::string name;
    at::Tensor* weight;
    at::Tensor keep;  // bool
  };
  std::vector<Entry> masks_;
};

// Structured pruning of the MLPs: in every layer, the `sparsity` fraction of intermediate channels
// (a row of gate_proj and up_proj and the matching column of down_proj) with the lowest scores is
// removed, the same number in every layer so that one config still describes the model, which
// comes back narrower (intermediate_size shrinks) and computes exactly what the original computes
// with those channels zeroed. A channel's score is the L2 norm of its down_proj column times
// either the L2 norm of its activation over `batches` (wanda) or of its up_proj row (magnitude).
// `kept`, when given, receives each layer's kept channel indices (ascending).
absl::StatusOr<LlamaModel> PruneMlpChannels(const LlamaModel& model, PruneMethod method,
                                            double sparsity, const std::vector<at::Tensor>& batches,
                                            std::vector<at::Tensor>* kept = nullptr);

// Structured pruning of attention: in every layer, the `sparsity` fraction of key/value heads with
// the lowest scores is removed together with the query heads that read them (grouped-query
// attention keeps its group size), so the model comes back with fewer heads and computes what the
// original computes with those heads' outputs zeroed. A group's score sums, over its o_proj input
// columns, the column's L2 norm times either the column's input norm over `batches` (wanda) or,
// for magnitude, the group's v_proj rows' norm. `kept` receives each layer's kept key/value heads.
absl::StatusOr<LlamaModel> PruneAttentionHeads(const LlamaModel& model, PruneMethod method,
                                               double sparsity,
                                               const std::vector<at::Tensor>& batches,
                                               std::vector<at::Tensor>* kept = nullptr);

// Fraction of zero weights over all linear layers of `model`.
double LinearSparsity(LlamaModel& model);

}  // namespace squeeze
