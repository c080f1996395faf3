// Sparsity control: make the expected sparsity s_hat of the gates follow the target ramp
// (KOFF_METHOD.md section 4), and the figures that say how well it did.
//
// Two controls, chosen with --sparsity-control:
//
//   project (ours, the default, chosen by measurement: bench/RESULTS.md "Sparsity control")
//     After each optimiser step of log_alpha on the task loss alone, ONE shift b is added to every
//     log_alpha (then clamped to +-clamp) so that s_hat(clamp(log_alpha + b)) = t exactly. s_hat is
//     monotone (non-increasing) in b, so b is found by bisection, on the host, in double precision,
//     from the gates' values alone: every data-parallel rank finds the same b, and a resumed run
//     needs no state beyond log_alpha. b is the multiplier the projection implies (logged). When t is
//     out of reach (t below the sparsity of gates all at +clamp), the nearest reachable value is taken.
//     Budget projection of this kind is how ProbMask meets its budget.
//
//   lagrangian (section 4, repaired for short runs)
//     Loss term  N * ( lambda1 (s_hat - t) + mu (s_hat - t)^2 ),  N = the number of gates, so that the
//     pull on one unit (N * c_i / P * dp_i) is about c_i / c_mean, whatever the model's size.
//     lambda1 by plain SGD ascent, lambda1 += lr_lambda * (s_hat - t) after each step (no Adam: Adam
//     normalises the error, so lambda1 integrated its sign and wound up); mu fixed (augmented
//     Lagrangian) instead of a learned lambda2; log_alpha clamped to +-4.6 as CoFiPruning and
//     Sheared-LLaMA do; the ramp at least max(warmup_frac * steps, 60) steps.
//
// Decision term (ours, --decide RHO; both modes). Under either control a gate whose task gradient is
// mostly noise diffuses between the clamps, and about half of the range (log_alpha in (-3.8, 0.6),
// p_open in (0.1, 0.9)) is undecided, so such units stay undecided however long the run. From the
// end of the ramp on, the term
//   rho(step) * sum_i (N c_i / P) H(p_open_i),   H(p) = -p log p - (1 - p) log(1 - p)
// (heads and neurons; N c_i / P as in the lagrangian, so the pull on a unit does not depend on the
// model's size) is added to the task loss, rho(step) rising linearly from 0 at the end of the ramp to
// rho at the last step. Its gradient, -rho (N c_i / P) p (1 - p) logit(p), pushes each gate away from
// p_open = 0.5 towards the side it is on: the gates commit, the task gradient still decides which.
// It is computed on the host from log_alpha alone (identical on every rank) and added to the gates'
// gradients before the optimiser step.
//
// Figures of the gates (cost shares of the prunable size P, KV groups included):
//   s_hat           expected sparsity 1 - E[kept] / P
//   hard sparsity   share of units whose z_det is 0 (log_alpha <= log(1/11)): what the gates remove
//                   by themselves, without the final sort
//   undecided       share of units with p_open in (0.1, 0.9): neither kept nor removed yet
//   override        (after the final mask) share removed by the exact-target sort although the gates
//                   hold it open (p_open >= 0.5): what the sort decided instead of the gates
#pragma once

#include <string>
#include <vector>

#include "engine/koff/gates.h"

namespace koff::offload {

enum class SparsityControl { project, lagrangian };
SparsityControl sparsity_control_from_name(const std::string& name);  // error naming the option
std::string sparsity_control_name(SparsityControl c);

struct ControlSettings {
  SparsityControl mode = SparsityControl::project;
  double target = 0.12;
  int64_t steps = 200;
  double warmup_frac = 0.2;
  double clamp = 4.6;        // |log_alpha| <= clamp after every step (both modes)
  double lr_lambda = 0.1;    // lagrangian: SGD ascent rate of lambda1
  double penalty = 10.0;     // lagrangian: mu of the fixed quadratic term
  double decide = 0.0;       // rho of the decision term (both modes; 0 = off)
};

// The length of the target ramp in steps, and the target t of a step (0 at step 0, the final target
// from the end of the ramp on).
double ramp_steps(const ControlSettings& c);
double target_at(const ControlSettings& c, int64_t step);

// The gates' log_alpha on the host, per layer (double precision).
struct HostGates {
  std::vector<std::vector<double>> heads, neurons;  // [L][H], [L][F]
};
HostGates host_gates(const HardConcreteGates& gates);
void store_gates(const HostGates& h, HardConcreteGates& gates);  // back into the gates' tensors

struct GateFigures {
  double expected_sparsity = 0, hard_sparsity = 0, undecided = 0;
};
// Figures of log_alpha + shift, clamped to +-clamp (clamp <= 0: no clamp).
GateFigures gate_figures(const HostGates& g, const UnitCosts& c, double shift = 0, double clamp = 0);

// project: the shift b with s_hat(clamp(log_alpha + b)) = t (within 1e-9 in b), applied to the
// gates (clamped). Returns b.
double project_to_target(HardConcreteGates& gates, double t, double clamp);
// Clamps every log_alpha to +-clamp in place.
void clamp_gates(HardConcreteGates& gates, double clamp);

// The control of one run, used by OffloadTrainer around each optimiser step of log_alpha:
//   begin_step(step)  the lagrangian adds its gradient to the gates' (project: nothing); returns t
//   end_step()        after the optimiser step: the projection, or lambda1's ascent and the clamp
// The gates are those of the run (not owned). lambda1 is the only state (checkpointed by the trainer).
class SparsityController {
 public:
  SparsityController() = default;
  SparsityController(const ControlSettings& settings, HardConcreteGates* gates);

  double begin_step(int64_t step);
  double decide_weight(int64_t step) const;  // rho(step) of the decision term (0 before the ramp's end)
  void end_step();

  const ControlSettings& settings() const { return settings_; }
  double target() const { return target_; }          // t of the last step
  double multiplier() const {                        // project: the last shift b; lagrangian: lambda1
    return settings_.mode == SparsityControl::project ? shift_ : lambda1_;
  }
  double lambda1() const { return lambda1_; }
  void set_lambda1(double v) { lambda1_ = v; }
  GateFigures figures() const;  // of the gates now

 private:
  ControlSettings settings_;
  HardConcreteGates* gates_ = nullptr;
  double target_ = 0, shift_ = 0, lambda1_ = 0, s_hat_before_ = 0;
};

// Share of the prunable size that `mask` removes although the gates hold it open (p_open >= 0.5),
// KV groups counted when the mask removes them and their keep probability is >= 0.5.
double final_mask_override(const HardConcreteGates& gates, const FinalMask& mask);

}  // namespace koff::offload
