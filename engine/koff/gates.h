// Hard-concrete gates on query heads and MLP neurons, and the sparsity they imply
// (KOFF_METHOD.md sections 2-4).
//
// One gate per prunable unit, shared by all domains: log_alpha[l] is [H] for the heads of layer l
// and [F] for its neurons. A training step draws ONE sample of every gate from a counter-based RNG
// keyed by (seed, step): every sequence of the step, every data-parallel rank and every resumed run
// sees the same mask without communicating.
//
// Unit costs (parameters removed with the unit), per layer of width d, head dim hd:
//   query head     2*d*hd (+hd with a q bias)            its q_proj rows and o_proj columns
//   KV group       2*d*hd (+2*hd with k/v biases)         removed only when all its heads are
//   MLP neuron     3*d                                    gate/up rows, down column
// Expected kept size, gates independent:
//   E[kept] = sum_h p_h c_h + sum_g (1 - prod_{h in g} (1 - p_h)) c_g + sum_i p_i 3d
//   s_hat = 1 - E[kept] / P,   P = the sum of all unit costs.
#pragma once

#include <vector>

#include "autograd/functions.h"
#include "engine/io/model_config.h"
#include "engine/tensor/random.h"

namespace koff::offload {

using autograd::Variable;

struct UnitCosts {
  int64_t layers = 0, heads = 0, kv_heads = 0, neurons = 0;  // per layer (a dense base model)
  double head = 0, group = 0, neuron = 0;                    // parameters per unit
  double prunable() const { return layers * (heads * head + kv_heads * group + neurons * neuron); }
  int64_t heads_per_group() const { return heads / kv_heads; }
};
UnitCosts unit_costs(const io::ModelConfig& config);
// All parameters of the model (embeddings, norms, lm_head included), for "removed as a fraction of all".
double total_parameters(const io::ModelConfig& config);

class HardConcreteGates {
 public:
  HardConcreteGates() = default;
  // log_alpha in `dtype` (f32 in training, even when the model computes in bf16; f64 in gradient
  // checks) on `device`.
  HardConcreteGates(const UnitCosts& costs, double init_log_alpha = 3.0, DType dtype = DType::f32,
                    Device device = Device::cpu());

  // Per layer [H] and [F] log_alpha (trainable leaves).
  std::vector<Variable>& head_log_alpha() { return head_; }
  std::vector<Variable>& neuron_log_alpha() { return neuron_; }
  std::vector<Variable> parameters() const;

  struct Sample {
    std::vector<Variable> heads, neurons;  // z per layer, differentiable in log_alpha
  };
  // The training sample of `step` (same on every rank and after a resume).
  Sample sample(uint64_t seed, int64_t step) const;
  // z_det = clamp(sigmoid(log_alpha)*(zeta-gamma)+gamma, 0, 1): evaluation without the final mask.
  Sample deterministic() const;

  // Expected sparsity s_hat (shape [], differentiable) and its value.
  Variable expected_sparsity() const;

  const UnitCosts& costs() const { return costs_; }

 private:
  UnitCosts costs_;
  std::vector<Variable> head_, neuron_;
};

// E[kept] of one layer from its gate probabilities, with the GQA group term (autograd function;
// backward: dE/dp_h = c_h + c_g * prod_{h' in g, h' != h} (1 - p_h'),  dE/dp_i = c_n).
Variable expected_kept(const Variable& p_heads, const Variable& p_neurons, const UnitCosts& costs);

// The final mask (section 7.1): units ordered by p_open ascending (ties by index: heads of all
// layers first, then neurons), removed in that order until the removed size reaches target * P; a
// KV group's cost counts when its last head goes. Kept units take z_det.
struct FinalMask {
  std::vector<std::vector<bool>> keep_heads, keep_neurons;  // per layer
  std::vector<Tensor> z_heads, z_neurons;                   // per layer, z_det of kept units, 0 for removed (f32)
  double removed = 0;                                       // parameters
  double prunable = 0;
  double sparsity() const { return prunable > 0 ? removed / prunable : 0; }
};
FinalMask final_mask(const HardConcreteGates& gates, double target);

}  // namespace koff::offload
