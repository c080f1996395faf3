// Reverse-mode automatic differentiation over a recorded graph (micrograd-sized, PyTorch-shaped).
//
// A Variable is a Tensor plus autograd metadata. A differentiable function (autograd/functions/*)
// computes its forward with engine/ops and, when some input requires a gradient and grad mode is on,
// records a Node holding its inputs and a backward closure. backward() walks the nodes in reverse
// topological order, accumulating gradients into leaves that require them.
//
// Frozen tensors (requires_grad = false) never receive a gradient, and a backward closure is told per
// input whether a gradient is needed, so a frozen weight costs no weight-gradient GEMM.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor/tensor.h"

namespace koff::autograd {

struct Node;

struct VariableImpl {
  Tensor data;
  Tensor grad;                     // accumulated gradient (leaves only)
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;   // the node that produced this variable (non-leaves)
  std::string name;
  // Called during backward() once this leaf's gradient is final for that pass (no node still to run
  // feeds it; `grad` may be undefined when no gradient reached it). Data parallelism uses it to start
  // all-reducing a bucket of gradients while the rest of the backward runs (engine/dist/grad_reducer.h).
  std::function<void()> grad_ready_hook;
};

class Variable {
 public:
  Variable() = default;
  explicit Variable(Tensor data, bool requires_grad = false, std::string name = {});

  bool defined() const { return impl_ != nullptr; }
  const Tensor& data() const { return impl_->data; }
  Tensor& mutable_data() { return impl_->data; }  // in-place updates by optimizers (no graph)
  const Tensor& grad() const { return impl_->grad; }
  Tensor& mutable_grad() { return impl_->grad; }
  bool requires_grad() const { return impl_ && impl_->requires_grad; }
  void set_requires_grad(bool value);  // leaves only
  bool is_leaf() const { return !impl_->grad_fn; }
  const std::string& name() const { return impl_->name; }
  const Shape& shape() const { return impl_->data.shape(); }
  DType dtype() const { return impl_->data.dtype(); }
  void zero_grad() { impl_->grad = Tensor(); }
  const std::shared_ptr<VariableImpl>& impl() const { return impl_; }

  // Reverse pass from this variable. With no argument it must be a single element (a loss) and the
  // seed gradient is 1. The graph is released afterwards.
  void backward(const Tensor& grad_output = {}) const;

 private:
  std::shared_ptr<VariableImpl> impl_;
};

// Backward closure: gradient of the node's output in; one gradient per input out (an undefined
// Tensor where needs[i] is false or the input has no gradient).
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_out, const std::vector<bool>& needs)>;

struct Node {
  std::string name;
  std::vector<std::shared_ptr<VariableImpl>> inputs;
  BackwardFn backward;
  Tensor grad_out;  // gradient of the output, accumulated during a backward pass
};

// Grad mode (thread-local). NoGradGuard disables recording in a scope (evaluation, optimizer steps).
bool grad_enabled();
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// Wraps a forward result: records a Node when grad mode is on and any input requires a gradient,
// otherwise returns a plain Variable. `backward` may capture saved tensors by value.
Variable make_result(Tensor output, const std::vector<Variable>& inputs, const char* name, BackwardFn backward);

}  // namespace koff::autograd
