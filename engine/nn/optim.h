// AdamW over groups of parameters, each group with its own settings (KOFF_METHOD.md section 6:
// gates, lambdas and memories train at different rates). State (m, v, step) can be saved and restored
// exactly, so a resumed run continues bit for bit.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "autograd/variable.h"
#include "engine/ops/ops.h"

namespace koff::nn {

class AdamW {
 public:
  struct Group {
    std::string name;
    std::vector<autograd::Variable> params;
    ops::AdamWConfig config;
    std::vector<Tensor> m, v;
  };

  // A negative lr in config ascends (the Lagrange multipliers' gradient ascent).
  void add_group(std::string name, std::vector<autograd::Variable> params, const ops::AdamWConfig& config);
  // One step on every parameter that has a gradient; lr of each group is config.lr * lr_scale[group]
  // (a missing scale is 1).
  void step(const std::vector<double>& lr_scale = {});
  void zero_grad();
  int64_t step_count() const { return step_; }
  std::vector<Group>& groups() { return groups_; }

  // "<group>.<i>.m" / ".v" tensors for checkpoints, and their restore.
  std::vector<std::pair<std::string, Tensor>> state() const;
  void load_state(const std::function<Tensor(const std::string&)>& get, int64_t step_count);

 private:
  std::vector<Group> groups_;
  int64_t step_ = 0;
};

}  // namespace koff::nn
