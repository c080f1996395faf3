#include "engine/koff/memory.h"

#include <cmath>

#include "engine/tensor/random.h"

namespace koff::offload {

namespace ag = autograd;
using nlohmann::json;

nlohmann::json MemoryConfig::to_json() const {
  json t = json::array();
  for (Proj p : targets) t.push_back(nn::proj_name(p));
  return {{"lora", lora}, {"kv", kv}, {"rank", rank}, {"alpha", alpha}, {"targets", t}, {"slots", slots},
          {"kv_init", kv_init}};
}

MemoryConfig MemoryConfig::from_json(const nlohmann::json& j) {
  MemoryConfig c;
  c.lora = j.value("lora", c.lora);
  c.kv = j.value("kv", c.kv);
  c.rank = j.value("rank", c.rank);
  c.alpha = j.value("alpha", c.alpha);
  c.slots = j.value("slots", c.slots);
  c.kv_init = j.value("kv_init", c.kv_init);
  if (j.contains("targets")) {
    c.targets.clear();
    for (const auto& t : j.at("targets")) c.targets.push_back(proj_from_name(t.get<std::string>()));
  }
  return c;
}

Proj proj_from_name(const std::string& name) {
  for (Proj p : {Proj::q, Proj::k, Proj::v, Proj::o, Proj::gate, Proj::up, Proj::down}) {
    std::string full = nn::proj_name(p);
    if (name == full || name + "_proj" == full) return p;
  }
  fail("unknown projection '{}' (known: q, k, v, o, gate, up, down)", name);
}

MemoryBank::MemoryBank(const nn::Transformer& model, const MemoryConfig& config, std::vector<std::string> domains,
                       uint64_t seed)
    : config_(config), domains_(std::move(domains)) {
  const io::ModelConfig& mc = model.config();
  KOFF_CHECK(!domains_.empty(), "a memory bank needs at least one domain");
  KOFF_CHECK(config.rank > 0 && config.slots > 0, "memory rank and slots must be positive");
  const int64_t D = static_cast<int64_t>(domains_.size());
  // Tables are f32 (f64 in gradient checks) on the model's device, also when the model computes in
  // bf16: hooks() casts what a step uses to the compute dtype (mixed precision).
  const DType dtype = model.dtype() == DType::f64 ? DType::f64 : DType::f32;
  const Device device = model.device();
  compute_dtype_ = model.dtype();
  head_dim_ = mc.head_dim;
  kv_heads_ = model.layer(0).n_kv_heads;
  uint64_t stream = 0;
  for (int64_t l = 0; l < model.num_layers(); ++l) {
    const nn::Layer& L = model.layer(l);
    LayerTables t;
    if (config.lora) {
      for (Proj p : config.targets) {
        const Tensor& w = const_cast<nn::Layer&>(L).proj(p).data();
        const int64_t out = w.size(0), in = w.size(1), r = config.rank;
        const double bound = 1.0 / std::sqrt(static_cast<double>(in));
        t.io[p] = {in, out};
        t.lora_a[p] = Variable(rand_uniform({D, r * in}, Philox(seed, ++stream), -bound, bound, dtype).to(device), true,
                               fmt::format("lora.{}.{}.A", l, nn::proj_name(p)));
        t.lora_b[p] = Variable(Tensor::zeros({D, out * r}, dtype, device), true,
                               fmt::format("lora.{}.{}.B", l, nn::proj_name(p)));
      }
    }
    if (config.kv) {
      KOFF_CHECK(L.n_kv_heads == kv_heads_, "KV memories need the same number of KV heads in every layer");
      const int64_t n = config.slots * kv_heads_ * head_dim_;
      t.kv_k = Variable(randn({D, n}, Philox(seed, ++stream), dtype, 0.02).to(device), true, fmt::format("kv.{}.keys", l));
      t.kv_v = Variable(randn({D, n}, Philox(seed, ++stream), dtype, 0.02).to(device), true,
                        fmt::format("kv.{}.values", l));
      if (config.kv_gated())
        t.kv_gate = Variable(Tensor::zeros({D, kv_heads_}, dtype, device), true, fmt::format("kv.{}.gate", l));
    }
    layers_.push_back(std::move(t));
  }
}

void MemoryBank::init_kv_from_text(const nn::Transformer& model, const std::vector<std::vector<int32_t>>& streams,
                                   uint64_t seed) {
  if (!config_.kv) return;
  KOFF_CHECK(streams.size() == domains_.size(), "{} token streams for {} domains", streams.size(), domains_.size());
  ag::NoGradGuard no_grad;
  const Philox rng(seed, 0x4B56);
  const int64_t m = config_.slots;
  for (size_t d = 0; d < streams.size(); ++d) {
    const auto& s = streams[d];
    KOFF_CHECK(static_cast<int64_t>(s.size()) > m, "domain '{}' has {} tokens, fewer than the {} memory slots",
               domains_[d], s.size(), m);
    const int64_t start = static_cast<int64_t>(rng.bits(d) % static_cast<uint64_t>(s.size() - static_cast<size_t>(m)));
    std::vector<int64_t> ids(s.begin() + start, s.begin() + start + m);
    nn::KvCache cache = model.make_cache(1, m);
    nn::ForwardOptions fo;
    fo.cache = &cache;
    (void)model.hidden(Tensor::from_vector(ids, {1, m}), fo);
    // The cache holds the keys after k-norm and RoPE, the space memory keys live in.
    for (size_t l = 0; l < layers_.size(); ++l) {
      const int64_t n = m * kv_heads_ * head_dim_;
      layers_[l].kv_k.mutable_data().select(0, static_cast<int64_t>(d)).copy_(cache.k[l].reshape({n}));
      layers_[l].kv_v.mutable_data().select(0, static_cast<int64_t>(d)).copy_(cache.v[l].reshape({n}));
    }
  }
}

Device MemoryBank::device() const {
  for (const auto& t : layers_) {
    if (!t.lora_a.empty()) return t.lora_a.begin()->second.data().device();
    if (t.kv_k.defined()) return t.kv_k.data().device();
  }
  return Device::cpu();
}

std::vector<Variable> MemoryBank::lora_parameters() const {
  std::vector<Variable> out;
  for (const auto& t : layers_)
    for (const auto& [p, a] : t.lora_a) {
      out.push_back(a);
      out.push_back(t.lora_b.at(p));
    }
  return out;
}

std::vector<Variable> MemoryBank::kv_parameters() const {
  std::vector<Variable> out;
  for (const auto& t : layers_)
    if (t.kv_k.defined()) {
      out.push_back(t.kv_k);
      out.push_back(t.kv_v);
      if (t.kv_gate.defined()) out.push_back(t.kv_gate);
    }
  return out;
}

// On the host: the tables are [D, G] per layer, too small for a kernel to pay off.
void MemoryBank::project_gates() {
  for (auto& t : layers_) {
    if (!t.kv_gate.defined()) continue;
    Tensor& g = t.kv_gate.mutable_data();
    Tensor h = g.to(Device::cpu()).to(DType::f64).clone();
    double* p = h.data<double>();
    bool changed = false;
    for (int64_t i = 0; i < h.numel(); ++i)
      if (!(p[i] >= 0.0)) p[i] = 0.0, changed = true;  // NaN too: a gate must stay a valid mass
    if (changed) g.copy_(h.to(g.dtype()).to(g.device()));
  }
}

std::vector<nn::LayerHooks> MemoryBank::hooks(const Tensor& domain_ids_any, const std::vector<Variable>* head_gates,
                                              const std::vector<Variable>* neuron_gates) const {
  KOFF_CHECK(domain_ids_any.dim() == 1, "domain ids must be [batch], got {}", shape_str(domain_ids_any.shape()));
  const Tensor domain_ids = domain_ids_any.to(device());
  // LoRA works on runs of consecutive sequences of one domain (the trainer orders each batch by domain).
  const std::vector<ag::LoraGroup> groups = ag::lora_groups(domain_ids_any.to(Device::cpu()).to_vector<int64_t>());
  const DType cd = compute_dtype_;
  const int64_t B = domain_ids.size(0), m = config_.slots, r = config_.rank;
  const double lora_scale = config_.alpha / static_cast<double>(r);
  std::vector<nn::LayerHooks> hooks(layers_.size());
  for (size_t l = 0; l < layers_.size(); ++l) {
    const LayerTables& t = layers_[l];
    nn::LayerHooks& h = hooks[l];
    if (head_gates) h.head_gate = (*head_gates)[l];
    if (neuron_gates) h.neuron_gate = (*neuron_gates)[l];
    if (t.kv_k.defined()) {
      h.mem_k = ag::reshape(ag::cast(ag::embedding(t.kv_k, domain_ids), cd), {B, m, kv_heads_, head_dim_});
      h.mem_v = ag::reshape(ag::cast(ag::embedding(t.kv_v, domain_ids), cd), {B, m, kv_heads_, head_dim_});
      // The gate stays in the tables' dtype (f32): attention takes it in its statistics dtype.
      if (t.kv_gate.defined()) h.mem_gate = ag::embedding(t.kv_gate, domain_ids);
    }
    if (!t.lora_a.empty()) {
      // Per sequence of domain d: y = x W^T + b + (alpha/r) (x A_d^T) B_d^T, the whole projection in one
      // node (autograd::linear_lora: one GEMM pair per run of one domain, the product added in place).
      h.project = [&t, groups, r, lora_scale](Proj p, const Variable& x, const Variable& w,
                                              const Variable& b) -> Variable {
        auto it = t.lora_a.find(p);
        if (it == t.lora_a.end()) return Variable();  // not a LoRA target: the plain projection
        return ag::linear_lora(x, w, b, it->second, t.lora_b.at(p), groups, r, lora_scale);
      };
    }
  }
  return hooks;
}

io::NamedTensors MemoryBank::state() const {
  io::NamedTensors out;
  for (const auto& v : lora_parameters()) out.emplace_back(v.name(), v.data());
  for (const auto& v : kv_parameters()) out.emplace_back(v.name(), v.data());
  return out;
}

void MemoryBank::load_state(const std::function<Tensor(const std::string&)>& get) {
  for (auto v : lora_parameters()) v.mutable_data().copy_(get(v.name()));
  for (auto v : kv_parameters()) v.mutable_data().copy_(get(v.name()));
}

}  // namespace koff::offload
