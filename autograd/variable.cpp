#include "autograd/variable.h"

#include <unordered_map>
#include <unordered_set>

#include "engine/ops/ops.h"

namespace koff::autograd {

namespace {
thread_local bool g_grad_enabled = true;

// Adds g into `slot`, owning the result: the first gradient is cloned because backward closures may
// return the same tensor for several inputs (add's backward), and in-place accumulation must not
// write through an alias.
void accumulate(Tensor& slot, const Tensor& g) {
  if (!slot.defined()) {
    slot = g.clone();
  } else {
    check_same_shape(slot, g, "gradient accumulation");
    ops::axpy_(slot, g, 1.0);
  }
}
}  // namespace

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = previous_; }

Variable::Variable(Tensor data, bool requires_grad, std::string name) : impl_(std::make_shared<VariableImpl>()) {
  impl_->data = std::move(data);
  impl_->name = std::move(name);
  set_requires_grad(requires_grad);
}

void Variable::set_requires_grad(bool value) {
  KOFF_CHECK(!impl_->grad_fn, "set_requires_grad on a non-leaf variable '{}'", impl_->name);
  KOFF_CHECK(!value || is_floating(impl_->data.dtype()), "variable '{}' of dtype {} cannot require a gradient",
             impl_->name, dtype_name(impl_->data.dtype()));
  impl_->requires_grad = value;
}

Variable make_result(Tensor output, const std::vector<Variable>& inputs, const char* name, BackwardFn backward) {
  Variable result(std::move(output));
  if (!g_grad_enabled) return result;
  bool any = false;
  for (const auto& v : inputs) any = any || v.requires_grad();
  if (!any) return result;
  auto node = std::make_shared<Node>();
  node->name = name;
  node->backward = std::move(backward);
  for (const auto& v : inputs) node->inputs.push_back(v.impl());
  result.impl()->requires_grad = true;
  result.impl()->grad_fn = std::move(node);
  return result;
}

void Variable::backward(const Tensor& grad_output) const {
  KOFF_CHECK(impl_ && impl_->requires_grad, "backward() on a variable that does not require a gradient");
  Tensor seed = grad_output;
  if (!seed.defined()) {
    KOFF_CHECK(impl_->data.numel() == 1, "backward() without a gradient needs a single-element output, got shape {}",
               shape_str(impl_->data.shape()));
    seed = Tensor::full(impl_->data.shape(), 1.0, impl_->data.dtype(), impl_->data.device());
  }
  check_same_shape(seed, impl_->data, "backward seed");
  if (!impl_->grad_fn) {  // a leaf: its gradient is the seed
    accumulate(impl_->grad, seed);
    if (impl_->grad_ready_hook) impl_->grad_ready_hook();
    return;
  }

  // Reverse topological order by an iterative DFS (graphs of deep models would overflow recursion).
  // `order` owns the nodes: releasing a node's inputs below may drop the last other reference.
  std::vector<std::shared_ptr<Node>> order;
  std::unordered_set<Node*> visited;
  std::vector<std::pair<std::shared_ptr<Node>, size_t>> stack = {{impl_->grad_fn, 0}};
  visited.insert(impl_->grad_fn.get());
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (next < node->inputs.size()) {
      std::shared_ptr<Node> child = node->inputs[next++]->grad_fn;
      if (child && visited.insert(child.get()).second) stack.push_back({std::move(child), 0});
    } else {
      order.push_back(std::move(node));
      stack.pop_back();
    }
  }

  // Leaves with a grad_ready_hook: how many nodes still to run feed each. Empty (and free) when no
  // leaf has a hook, the usual case.
  std::unordered_map<VariableImpl*, int64_t> pending;
  for (const auto& node : order)
    for (const auto& input : node->inputs)
      if (!input->grad_fn && input->grad_ready_hook) ++pending[input.get()];
  auto node_done = [&](const Node* node) {
    if (pending.empty()) return;
    for (const auto& input : node->inputs) {
      auto p = pending.find(input.get());
      if (p != pending.end() && --p->second == 0) input->grad_ready_hook();
    }
  };

  impl_->grad_fn->grad_out = seed;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* node = it->get();
    if (!node->grad_out.defined()) {  // no gradient reached this node
      node_done(node);
      continue;
    }
    KOFF_CHECK(node->backward, "backward through '{}' a second time: the graph is released after backward()",
               node->name);
    std::vector<bool> needs(node->inputs.size());
    for (size_t i = 0; i < needs.size(); ++i) needs[i] = node->inputs[i]->requires_grad;
    std::vector<Tensor> grads = node->backward(node->grad_out, needs);
    KOFF_CHECK(grads.size() == node->inputs.size(), "backward of '{}' returned {} gradients for {} inputs",
               node->name, grads.size(), node->inputs.size());
    for (size_t i = 0; i < grads.size(); ++i) {
      if (!needs[i] || !grads[i].defined()) continue;
      auto& input = node->inputs[i];
      KOFF_CHECK(grads[i].shape() == input->data.shape(), "backward of '{}': gradient {} of shape {} for input {}",
                 node->name, i, shape_str(grads[i].shape()), shape_str(input->data.shape()));
      if (input->grad_fn) {
        Tensor& slot = input->grad_fn->grad_out;
        slot = slot.defined() ? ops::add(slot, grads[i]) : grads[i];
      } else {
        accumulate(input->grad, grads[i]);
      }
    }
    node_done(node);
    // Free saved tensors and intermediate gradients as soon as the node is done.
    node->grad_out = Tensor();
    node->backward = nullptr;
    node->inputs.clear();
  }
}

}  // namespace koff::autograd
