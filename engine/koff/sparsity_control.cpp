#include "engine/koff/sparsity_control.h"

#include <algorithm>
#include <cmath>

#include "engine/ops/ops.h"

namespace koff::offload {

namespace {

using HC = ops::HardConcrete;

// p_open = sigmoid(log_alpha - kCenter): kCenter is the log_alpha at which p_open = 0.5.
const double kCenter = HC::beta * std::log(-HC::gamma / HC::zeta);
double p_open(double la) { return 1 / (1 + std::exp(-(la - kCenter))); }

// z_det = 0 exactly when sigmoid(la) (zeta - gamma) + gamma <= 0, i.e. la <= log(-gamma / zeta).
const double kZeroBelow = std::log(-HC::gamma / HC::zeta);

double shifted(double la, double shift, double clamp) {
  const double v = la + shift;
  return clamp > 0 ? std::clamp(v, -clamp, clamp) : v;
}

// E[kept] / P of log_alpha + shift (clamped): the bisection's inner loop.
double expected_kept_share(const HostGates& g, const UnitCosts& c, double shift, double clamp) {
  const int64_t rep = c.heads_per_group();
  double kept = 0;
  for (size_t l = 0; l < g.heads.size(); ++l) {
    const auto& h = g.heads[l];
    for (int64_t grp = 0; grp < c.kv_heads; ++grp) {
      double all_closed = 1;
      for (int64_t i = grp * rep; i < (grp + 1) * rep; ++i) {
        const double p = p_open(shifted(h[static_cast<size_t>(i)], shift, clamp));
        kept += p * c.head;
        all_closed *= 1 - p;
      }
      kept += (1 - all_closed) * c.group;
    }
    double neurons = 0;
    for (double la : g.neurons[l]) neurons += p_open(shifted(la, shift, clamp));
    kept += neurons * c.neuron;
  }
  return kept / c.prunable();
}

}  // namespace

SparsityControl sparsity_control_from_name(const std::string& name) {
  if (name == "project") return SparsityControl::project;
  if (name == "lagrangian") return SparsityControl::lagrangian;
  fail("--sparsity-control must be project or lagrangian, got '{}'", name);
}

std::string sparsity_control_name(SparsityControl c) { return c == SparsityControl::project ? "project" : "lagrangian"; }

double ramp_steps(const ControlSettings& c) {
  double r = c.warmup_frac * static_cast<double>(c.steps);
  // The Lagrangian needs time: the gates answer its pull with a delay (Adam's momentum, saturation).
  if (c.mode == SparsityControl::lagrangian) r = std::max(r, 60.0);
  return std::max(1.0, r);
}

double target_at(const ControlSettings& c, int64_t step) {
  return c.target * std::min(1.0, static_cast<double>(step) / ramp_steps(c));
}

HostGates host_gates(const HardConcreteGates& gates) {
  HostGates h;
  auto& g = const_cast<HardConcreteGates&>(gates);
  for (auto& v : g.head_log_alpha()) h.heads.push_back(v.data().to(Device::cpu()).to_vector<double>());
  for (auto& v : g.neuron_log_alpha()) h.neurons.push_back(v.data().to(Device::cpu()).to_vector<double>());
  return h;
}

void store_gates(const HostGates& h, HardConcreteGates& gates) {
  auto put = [](std::vector<Variable>& vars, const std::vector<std::vector<double>>& values) {
    for (size_t l = 0; l < vars.size(); ++l) {
      Tensor& t = vars[l].mutable_data();
      t.copy_(Tensor::from_vector(values[l], {static_cast<int64_t>(values[l].size())}).to(t.dtype()).to(t.device()));
    }
  };
  put(gates.head_log_alpha(), h.heads);
  put(gates.neuron_log_alpha(), h.neurons);
}

GateFigures gate_figures(const HostGates& g, const UnitCosts& c, double shift, double clamp) {
  GateFigures f;
  f.expected_sparsity = 1 - expected_kept_share(g, c, shift, clamp);
  const int64_t rep = c.heads_per_group();
  double hard = 0, undecided = 0;
  auto open_question = [](double p) { return p > 0.1 && p < 0.9; };
  for (size_t l = 0; l < g.heads.size(); ++l) {
    for (int64_t grp = 0; grp < c.kv_heads; ++grp) {
      bool all_zero = true;
      double all_closed = 1;
      for (int64_t i = grp * rep; i < (grp + 1) * rep; ++i) {
        const double la = shifted(g.heads[l][static_cast<size_t>(i)], shift, clamp), p = p_open(la);
        const bool zero = la <= kZeroBelow;
        hard += zero ? c.head : 0;
        undecided += open_question(p) ? c.head : 0;
        all_zero = all_zero && zero;
        all_closed *= 1 - p;
      }
      hard += all_zero ? c.group : 0;
      undecided += open_question(1 - all_closed) ? c.group : 0;
    }
    for (double raw : g.neurons[l]) {
      const double la = shifted(raw, shift, clamp);
      hard += la <= kZeroBelow ? c.neuron : 0;
      undecided += open_question(p_open(la)) ? c.neuron : 0;
    }
  }
  f.hard_sparsity = hard / c.prunable();
  f.undecided = undecided / c.prunable();
  return f;
}

double project_to_target(HardConcreteGates& gates, double t, double clamp) {
  HostGates h = host_gates(gates);
  const UnitCosts& c = gates.costs();
  double lo = -60, hi = 60;  // without a clamp, every gate is saturated well inside this range
  if (clamp > 0) {
    double mn = 1e300, mx = -1e300;
    for (const auto* group : {&h.heads, &h.neurons})
      for (const auto& layer : *group)
        for (double v : layer) mn = std::min(mn, v), mx = std::max(mx, v);
    lo = -clamp - mx;  // every gate at -clamp: the largest reachable sparsity
    hi = clamp - mn;   // every gate at +clamp: the smallest
  }
  // s_hat(b) is non-increasing in b: find s_hat(b) = t; out of reach, the nearest end.
  for (int i = 0; i < 200 && hi - lo > 1e-10; ++i) {
    const double mid = 0.5 * (lo + hi);
    if (1 - expected_kept_share(h, c, mid, clamp) > t) lo = mid;
    else hi = mid;
  }
  const double b = 0.5 * (lo + hi);
  for (auto* group : {&h.heads, &h.neurons})
    for (auto& layer : *group)
      for (double& v : layer) v = shifted(v, b, clamp);
  store_gates(h, gates);
  return b;
}

void clamp_gates(HardConcreteGates& gates, double clamp) {
  HostGates h = host_gates(gates);
  for (auto* group : {&h.heads, &h.neurons})
    for (auto& layer : *group)
      for (double& v : layer) v = std::clamp(v, -clamp, clamp);
  store_gates(h, gates);
}

SparsityController::SparsityController(const ControlSettings& settings, HardConcreteGates* gates)
    : settings_(settings), gates_(gates) {
  KOFF_CHECK(settings.clamp > 0 && std::isfinite(settings.clamp), "the log_alpha clamp must be positive, got {}",
             settings.clamp);
}

double SparsityController::decide_weight(int64_t step) const {
  const double ramp = ramp_steps(settings_), last = static_cast<double>(std::max<int64_t>(settings_.steps - 1, 1));
  if (settings_.decide <= 0 || static_cast<double>(step) < ramp || last <= ramp) return 0;
  return settings_.decide * std::min(1.0, (static_cast<double>(step) - ramp) / (last - ramp));
}

static void add_decision_gradient(HardConcreteGates& gates, double rho) {
  const HostGates h = host_gates(gates);
  const UnitCosts& c = gates.costs();
  const double n = static_cast<double>(c.layers * (c.heads + c.neurons));
  auto add = [&](std::vector<Variable>& vars, const std::vector<std::vector<double>>& la, double cost) {
    const double w = rho * n * cost / c.prunable();
    for (size_t l = 0; l < vars.size(); ++l) {
      std::vector<double> g(la[l].size());
      for (size_t i = 0; i < g.size(); ++i) {
        const double p = p_open(la[l][i]);
        g[i] = -w * p * (1 - p) * (la[l][i] - kCenter);  // d/dla of w H(p), since logit(p) = la - kCenter
      }
      Tensor& grad = vars[l].mutable_grad();
      const Tensor& data = vars[l].data();
      Tensor t = Tensor::from_vector(g, {static_cast<int64_t>(g.size())}).to(data.dtype()).to(data.device());
      grad = grad.defined() ? ops::add(grad, t) : t;
    }
  };
  add(gates.head_log_alpha(), h.heads, static_cast<double>(c.head));
  add(gates.neuron_log_alpha(), h.neurons, static_cast<double>(c.neuron));
}

double SparsityController::begin_step(int64_t step) {
  target_ = target_at(settings_, step);
  if (const double rho = decide_weight(step); rho > 0) add_decision_gradient(*gates_, rho);
  if (settings_.mode == SparsityControl::lagrangian) {
    // N (lambda1 (s_hat - t) + mu (s_hat - t)^2), lambda1 a constant here (ascended in end_step).
    namespace ag = autograd;
    Variable s_hat = gates_->expected_sparsity();
    s_hat_before_ = s_hat.data().item();
    const UnitCosts& c = gates_->costs();
    const double n = static_cast<double>(c.layers * (c.heads + c.neurons));
    Variable diff = ag::sub(s_hat, Variable(Tensor::full({}, target_, s_hat.dtype(), s_hat.data().device())));
    ag::add(ag::scale(diff, n * lambda1_), ag::scale(ag::mul(diff, diff), n * settings_.penalty)).backward();
  }
  return target_;
}

void SparsityController::end_step() {
  if (settings_.mode == SparsityControl::project) {
    shift_ = project_to_target(*gates_, target_, settings_.clamp);
  } else {
    // Plain SGD ascent: lambda1 grows while s_hat is above t (the term then pulls s_hat down) and
    // falls while it is below.
    lambda1_ += settings_.lr_lambda * (s_hat_before_ - target_);
    clamp_gates(*gates_, settings_.clamp);
  }
}

GateFigures SparsityController::figures() const { return gate_figures(host_gates(*gates_), gates_->costs()); }

double final_mask_override(const HardConcreteGates& gates, const FinalMask& mask) {
  const HostGates h = host_gates(gates);
  const UnitCosts& c = gates.costs();
  const int64_t rep = c.heads_per_group();
  double overridden = 0;
  for (size_t l = 0; l < h.heads.size(); ++l) {
    for (int64_t grp = 0; grp < c.kv_heads; ++grp) {
      bool group_removed = true;
      double all_closed = 1;
      for (int64_t i = grp * rep; i < (grp + 1) * rep; ++i) {
        const double p = p_open(h.heads[l][static_cast<size_t>(i)]);
        const bool removed = !mask.keep_heads[l][static_cast<size_t>(i)];
        overridden += removed && p >= 0.5 ? c.head : 0;
        group_removed = group_removed && removed;
        all_closed *= 1 - p;
      }
      overridden += group_removed && 1 - all_closed >= 0.5 ? c.group : 0;
    }
    for (size_t i = 0; i < h.neurons[l].size(); ++i)
      overridden += !mask.keep_neurons[l][i] && p_open(h.neurons[l][i]) >= 0.5 ? c.neuron : 0;
  }
  return overridden / c.prunable();
}

}  // namespace koff::offload
