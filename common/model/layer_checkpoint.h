// Gradient checkpointing (Chen et al. 2016): a function's activations are not kept for the
// backward pass but recomputed there from its saved input, trading one more forward pass for the
// memory of everything the function computes inside.
#pragma once

#include <ATen/ATen.h>

#include <functional>

namespace squeeze {

// fn(x), recorded as one node of the autograd graph that keeps only `x`. Its backward runs `fn`
// again on `x` with the random state (dropout) and the autocast setting of the first run, and
// backpropagates through that: gradients of the tensors `fn` closes over (adapters, weights)
// accumulate in their .grad, and x's gradient goes on to the rest of the graph. `x` must require
// grad, or the backward pass never reaches this node. Whatever `fn` closes over must outlive the
// backward pass.
at::Tensor CheckpointedCall(std::function<at::Tensor(const at::Tensor&)> fn, const at::Tensor& x);

}  // namespace squeeze
