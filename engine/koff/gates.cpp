#include "engine/koff/gates.h"

#include <algorithm>
#include <numeric>

namespace koff::offload {

namespace ag = autograd;

UnitCosts unit_costs(const io::ModelConfig& c) {
  KOFF_CHECK(!c.is_pruned(), "gates are learned on a dense base model; this config is already pruned");
  UnitCosts u;
  u.layers = c.num_hidden_layers;
  u.heads = c.num_attention_heads;
  u.kv_heads = c.num_key_value_heads;
  u.neurons = c.intermediate_size;
  const double d = static_cast<double>(c.hidden_size), hd = static_cast<double>(c.head_dim);
  u.head = 2 * d * hd + (c.has_qkv_bias() ? hd : 0);
  u.group = 2 * d * hd + (c.has_qkv_bias() ? 2 * hd : 0);
  u.neuron = 3 * d + (c.mlp_bias ? 2 : 0);
  return u;
}

double total_parameters(const io::ModelConfig& c) {
  const double d = static_cast<double>(c.hidden_size), V = static_cast<double>(c.vocab_size);
  const UnitCosts u = unit_costs(c);
  double per_layer = 2 * d;  // the two norms
  if (c.has_qk_norm()) per_layer += 2 * static_cast<double>(c.head_dim);
  if (c.has_o_bias()) per_layer += d;
  if (c.mlp_bias) per_layer += d;  // down bias (gate/up biases are counted with the neurons)
  return V * d * (c.tie_word_embeddings ? 1 : 2) + d + u.prunable() + u.layers * per_layer;
}

HardConcreteGates::HardConcreteGates(const UnitCosts& costs, double init_log_alpha, DType dtype, Device device)
    : costs_(costs) {
  for (int64_t l = 0; l < costs.layers; ++l) {
    head_.emplace_back(Tensor::full({costs.heads}, init_log_alpha, dtype, device), true,
                       fmt::format("log_alpha.heads.{}", l));
    neuron_.emplace_back(Tensor::full({costs.neurons}, init_log_alpha, dtype, device), true,
                         fmt::format("log_alpha.neurons.{}", l));
  }
}

std::vector<Variable> HardConcreteGates::parameters() const {
  std::vector<Variable> all = head_;
  all.insert(all.end(), neuron_.begin(), neuron_.end());
  return all;
}

HardConcreteGates::Sample HardConcreteGates::sample(uint64_t seed, int64_t step) const {
  // Stream = step: each step's draw is independent of every other and needs no saved state.
  const Philox rng(seed ^ 0x9A7E5EEDull, static_cast<uint64_t>(step));
  const uint64_t per_layer = static_cast<uint64_t>(costs_.heads + costs_.neurons);
  Sample s;
  if (head_.empty()) return s;
  // The uniforms of every layer are drawn on the host and moved to the gates' device in one copy.
  const int64_t H = costs_.heads, F = costs_.neurons, L = static_cast<int64_t>(head_.size());
  Tensor u = Tensor::empty({L * (H + F)}, head_[0].dtype());
  for (int64_t l = 0; l < L; ++l) {
    const uint64_t first = static_cast<uint64_t>(l) * per_layer;
    u.slice(0, l * (H + F), l * (H + F) + H).copy_(rand_uniform({H}, rng, 0.0, 1.0, u.dtype(), first));
    u.slice(0, l * (H + F) + H, (l + 1) * (H + F))
        .copy_(rand_uniform({F}, rng, 0.0, 1.0, u.dtype(), first + static_cast<uint64_t>(H)));
  }
  u = u.to(head_[0].data().device());
  for (int64_t l = 0; l < L; ++l) {
    s.heads.push_back(ag::hard_concrete_sample(head_[static_cast<size_t>(l)], u.slice(0, l * (H + F), l * (H + F) + H)));
    s.neurons.push_back(
        ag::hard_concrete_sample(neuron_[static_cast<size_t>(l)], u.slice(0, l * (H + F) + H, (l + 1) * (H + F))));
  }
  return s;
}

HardConcreteGates::Sample HardConcreteGates::deterministic() const {
  Sample s;
  for (size_t l = 0; l < head_.size(); ++l) {
    s.heads.emplace_back(ops::hard_concrete_deterministic(head_[l].data()));
    s.neurons.emplace_back(ops::hard_concrete_deterministic(neuron_[l].data()));
  }
  return s;
}

Variable expected_kept(const Variable& p_heads, const Variable& p_neurons, const UnitCosts& c) {
  const std::vector<double> ph = p_heads.data().to_vector<double>(), pn = p_neurons.data().to_vector<double>();
  const int64_t rep = c.heads_per_group();
  double kept = 0;
  for (double p : ph) kept += p * c.head;
  for (int64_t g = 0; g < c.kv_heads; ++g) {
    double all_closed = 1;
    for (int64_t h = g * rep; h < (g + 1) * rep; ++h) all_closed *= 1 - ph[static_cast<size_t>(h)];
    kept += (1 - all_closed) * c.group;
  }
  for (double p : pn) kept += p * c.neuron;
  // Computed on the host (a few thousand probabilities, once per step); the result lives with them.
  const Device device = p_heads.data().device();
  Tensor out = Tensor::full({}, kept, p_heads.dtype(), device);
  return ag::make_result(out, {p_heads, p_neurons}, "expected_kept",
                         [ph, pn, c, rep, dtype = p_heads.dtype(), device](const Tensor& dy, const std::vector<bool>& n) {
                           const double g = dy.item();
                           Tensor dh, dn;
                           if (n[0]) {
                             std::vector<double> v(ph.size());
                             for (int64_t h = 0; h < c.heads; ++h) {
                               const int64_t grp = h / rep;
                               double others_closed = 1;  // prod over the group's other heads
                               for (int64_t o = grp * rep; o < (grp + 1) * rep; ++o)
                                 if (o != h) others_closed *= 1 - ph[static_cast<size_t>(o)];
                               v[static_cast<size_t>(h)] = g * (c.head + c.group * others_closed);
                             }
                             dh = Tensor::from_vector(v, {c.heads}).to(dtype).to(device);
                           }
                           if (n[1]) dn = Tensor::full({c.neurons}, g * c.neuron, dtype, device);
                           return std::vector<Tensor>{dh, dn};
                         });
}

Variable HardConcreteGates::expected_sparsity() const {
  Variable kept;
  for (size_t l = 0; l < head_.size(); ++l) {
    Variable k = expected_kept(ag::hard_concrete_p_open(head_[l]), ag::hard_concrete_p_open(neuron_[l]), costs_);
    kept = kept.defined() ? ag::add(kept, k) : k;
  }
  // s_hat = 1 - E[kept] / P
  Variable one(Tensor::full({}, 1.0, kept.dtype(), kept.data().device()));
  return ag::sub(one, ag::scale(kept, 1.0 / costs_.prunable()));
}

FinalMask final_mask(const HardConcreteGates& gates, double target) {
  KOFF_CHECK(target >= 0 && target < 1, "target sparsity must be in [0, 1), got {}", target);
  const UnitCosts& c = gates.costs();
  struct Unit {
    double p;
    int64_t order, layer, index;
    bool head;
  };
  std::vector<Unit> units;
  int64_t order = 0;
  auto& heads = const_cast<HardConcreteGates&>(gates).head_log_alpha();
  auto& neurons = const_cast<HardConcreteGates&>(gates).neuron_log_alpha();
  std::vector<std::vector<double>> ph, pn;
  for (int64_t l = 0; l < c.layers; ++l) {
    ph.push_back(ops::hard_concrete_p_open(heads[l].data()).to_vector<double>());
    for (int64_t h = 0; h < c.heads; ++h) units.push_back({ph.back()[h], order++, l, h, true});
  }
  for (int64_t l = 0; l < c.layers; ++l) {
    pn.push_back(ops::hard_concrete_p_open(neurons[l].data()).to_vector<double>());
    for (int64_t i = 0; i < c.neurons; ++i) units.push_back({pn.back()[i], order++, l, i, false});
  }
  std::stable_sort(units.begin(), units.end(), [](const Unit& a, const Unit& b) {
    return a.p < b.p || (a.p == b.p && a.order < b.order);
  });

  FinalMask m;
  m.prunable = c.prunable();
  m.keep_heads.assign(c.layers, std::vector<bool>(c.heads, true));
  m.keep_neurons.assign(c.layers, std::vector<bool>(c.neurons, true));
  const int64_t rep = c.heads_per_group();
  const double goal = target * m.prunable;
  for (const Unit& u : units) {
    if (m.removed >= goal) break;
    if (u.head) {
      m.keep_heads[u.layer][u.index] = false;
      m.removed += c.head;
      const int64_t g = u.index / rep;
      bool group_gone = true;
      for (int64_t h = g * rep; h < (g + 1) * rep; ++h) group_gone = group_gone && !m.keep_heads[u.layer][h];
      if (group_gone) m.removed += c.group;
    } else {
      m.keep_neurons[u.layer][u.index] = false;
      m.removed += c.neuron;
    }
  }
  for (int64_t l = 0; l < c.layers; ++l) {
    Tensor zh = ops::hard_concrete_deterministic(heads[l].data()).to(Device::cpu()).to(DType::f32).clone();
    Tensor zn = ops::hard_concrete_deterministic(neurons[l].data()).to(Device::cpu()).to(DType::f32).clone();
    for (int64_t h = 0; h < c.heads; ++h)
      if (!m.keep_heads[l][h]) zh.data<float>()[h] = 0;
    for (int64_t i = 0; i < c.neurons; ++i)
      if (!m.keep_neurons[l][i]) zn.data<float>()[i] = 0;
    m.z_heads.push_back(zh);
    m.z_neurons.push_back(zn);
  }
  return m;
}

}  // namespace koff::offload
