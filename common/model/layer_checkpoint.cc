#include "common/model/layer_checkpoint.h"

#include <ATen/core/Generator.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <mutex>
#include <optional>
#include <utility>

#include "common/model/torch_compat.h"

namespace squeeze {
namespace {

// What the backward pass needs to run the function again as the forward pass ran it.
struct Recomputation : torch::CustomClassHolder {
  std::function<at::Tensor(const at::Tensor&)> fn;
  at::Tensor rng_state;  // the device generator's state before the first run
  bool autocast = false;
};

at::Generator DefaultGenerator(const at::Device& device) {
  return at::globalContext().defaultGenerator(device);
}

at::Tensor GeneratorState(const at::Device& device) {
  at::Generator gen = DefaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void SetGeneratorState(const at::Device& device, const at::Tensor& state) {
  at::Generator gen = DefaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

class CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            c10::intrusive_ptr<Recomputation> r) {
    r->rng_state = GeneratorState(x.device());
    r->autocast = x.is_cuda() && compat::CudaAutocastEnabled();
    // Run as the recomputation will, with gradients recorded (what switches dropout on), on a
    // detached input; the detached output lets this run's graph and activations go at once.
    at::Tensor y;
    {
      at::AutoGradMode grad(true);
      y = r->fn(x.detach()).detach();
    }
    ctx->save_for_backward({x});
    ctx->saved_data["recomputation"] = c10::IValue::make_capsule(std::move(r));
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const at::Tensor saved = ctx->get_saved_variables()[0];
    auto r = c10::static_intrusive_pointer_cast<Recomputation>(
        ctx->saved_data["recomputation"].toCapsule());
    at::Tensor x = saved.detach().requires_grad_(true);
    at::Tensor y;
    {
      at::AutoGradMode grad(true);
      std::optional<compat::CudaBf16Autocast> autocast;
      if (r->autocast) autocast.emplace();
      // Same dropout masks as the first run; the generator then continues where it was.
      const at::Tensor now = GeneratorState(x.device());
      SetGeneratorState(x.device(), r->rng_state);
      y = r->fn(x);
      SetGeneratorState(x.device(), now);
    }
    torch::autograd::backward({y}, {grad_outputs[0]});
    return {x.grad(), at::Tensor()};
  }
};

}  // namespace

at::Tensor CheckpointedCall(std::function<at::Tensor(const at::Tensor&)> fn, const at::Tensor& x) {
  auto r = c10::make_intrusive<Recomputation>();
  r->fn = std::move(fn);
  return CheckpointFunction::apply(x, std::move(r));
}

}  // namespace squeeze
