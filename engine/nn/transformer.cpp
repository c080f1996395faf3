#include "engine/nn/transformer.h"

#include <cmath>
#include <filesystem>
#include <map>

#include "engine/io/gguf.h"
#include "engine/io/safetensors.h"
#include "engine/tensor/random.h"

namespace koff::nn {

namespace ag = autograd;

const char* proj_name(Proj p) {
  switch (p) {
    case Proj::q: return "q_proj";
    case Proj::k: return "k_proj";
    case Proj::v: return "v_proj";
    case Proj::o: return "o_proj";
    case Proj::gate: return "gate_proj";
    case Proj::up: return "up_proj";
    case Proj::down: return "down_proj";
  }
  return "?";
}

Variable& Layer::proj(Proj p) {
  switch (p) {
    case Proj::q: return wq;
    case Proj::k: return wk;
    case Proj::v: return wv;
    case Proj::o: return wo;
    case Proj::gate: return w_gate;
    case Proj::up: return w_up;
    case Proj::down: return w_down;
  }
  return wq;
}

namespace {

// [B, T, G, hd] -> [B, T, H, hd], query head h taking KV head head_group[h]. Inference only.
Variable expand_groups(const Variable& x, const std::vector<int64_t>& head_group) {
  if (!x.defined()) return x;
  KOFF_CHECK(!x.requires_grad(), "a pruned layer with unequal KV groups is for inference: no gradient through it");
  const Tensor& t = x.data();
  const int64_t H = static_cast<int64_t>(head_group.size());
  Tensor out = Tensor::empty({t.size(0), t.size(1), H, t.size(3)}, t.dtype(), t.device());
  for (int64_t h = 0; h < H; ++h) out.slice(2, h, h + 1).copy_(t.slice(2, head_group[h], head_group[h] + 1));
  return Variable(out);
}

Variable param(const Shape& shape, DType dtype, std::string name) {
  return Variable(Tensor::zeros(shape, dtype), false, std::move(name));
}

}  // namespace

Transformer::Transformer(const io::ModelConfig& config, DType dtype) : config_(config), dtype_(dtype) {
  const int64_t d = config.hidden_size, hd = config.head_dim, V = config.vocab_size;
  embed_ = param({V, d}, dtype, "model.embed_tokens.weight");
  final_norm_ = param({d}, dtype, "model.norm.weight");
  if (!config.tie_word_embeddings) lm_head_ = param({V, d}, dtype, "lm_head.weight");
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    const io::LayerWidths w = config.layer(i);
    const std::string p = fmt::format("model.layers.{}.", i);
    Layer L;
    L.n_heads = w.num_attention_heads();
    L.n_kv_heads = w.num_key_value_heads();
    L.n_ff = w.intermediate_size;
    bool even = true;
    for (int64_t n : w.heads_per_kv_group) even = even && n == w.heads_per_kv_group.front();
    if (!even) {
      for (size_t g = 0; g < w.heads_per_kv_group.size(); ++g)
        for (int64_t k = 0; k < w.heads_per_kv_group[g]; ++k) L.head_group.push_back(static_cast<int64_t>(g));
    }
    L.input_norm = param({d}, dtype, p + "input_layernorm.weight");
    L.post_norm = param({d}, dtype, p + "post_attention_layernorm.weight");
    L.wq = param({L.n_heads * hd, d}, dtype, p + "self_attn.q_proj.weight");
    L.wk = param({L.n_kv_heads * hd, d}, dtype, p + "self_attn.k_proj.weight");
    L.wv = param({L.n_kv_heads * hd, d}, dtype, p + "self_attn.v_proj.weight");
    L.wo = param({d, L.n_heads * hd}, dtype, p + "self_attn.o_proj.weight");
    if (config.has_qkv_bias()) {
      L.bq = param({L.n_heads * hd}, dtype, p + "self_attn.q_proj.bias");
      L.bk = param({L.n_kv_heads * hd}, dtype, p + "self_attn.k_proj.bias");
      L.bv = param({L.n_kv_heads * hd}, dtype, p + "self_attn.v_proj.bias");
    }
    if (config.has_o_bias()) L.bo = param({d}, dtype, p + "self_attn.o_proj.bias");
    if (config.has_qk_norm()) {
      L.q_norm = param({hd}, dtype, p + "self_attn.q_norm.weight");
      L.k_norm = param({hd}, dtype, p + "self_attn.k_norm.weight");
    }
    L.w_gate = param({L.n_ff, d}, dtype, p + "mlp.gate_proj.weight");
    L.w_up = param({L.n_ff, d}, dtype, p + "mlp.up_proj.weight");
    L.w_down = param({d, L.n_ff}, dtype, p + "mlp.down_proj.weight");
    if (config.mlp_bias) {
      L.b_gate = param({L.n_ff}, dtype, p + "mlp.gate_proj.bias");
      L.b_up = param({L.n_ff}, dtype, p + "mlp.up_proj.bias");
      L.b_down = param({d}, dtype, p + "mlp.down_proj.bias");
    }
    layers_.push_back(std::move(L));
  }
}

std::vector<std::pair<std::string, Variable>> Transformer::named_parameters() const {
  std::vector<std::pair<std::string, Variable>> out;
  auto add = [&](const Variable& v) {
    if (v.defined()) out.emplace_back(v.name(), v);
  };
  add(embed_);
  for (const Layer& L : layers_) {
    for (const Variable* v : {&L.input_norm, &L.wq, &L.bq, &L.wk, &L.bk, &L.wv, &L.bv, &L.q_norm, &L.k_norm, &L.wo, &L.bo,
                              &L.post_norm, &L.w_gate, &L.b_gate, &L.w_up, &L.b_up, &L.w_down, &L.b_down})
      add(*v);
  }
  add(final_norm_);
  add(lm_head_);
  return out;
}

int64_t Transformer::num_parameters() const {
  int64_t n = 0;
  for (const auto& [name, v] : named_parameters()) n += v.data().numel();
  return n;
}

void Transformer::set_requires_grad(bool value) {
  for (auto& [name, v] : named_parameters()) const_cast<Variable&>(v).set_requires_grad(value);
}

void Transformer::to(Device device) {
  for (auto& [name, v] : named_parameters()) {
    Tensor& t = const_cast<Variable&>(v).mutable_data();
    t = t.to(device);
  }
}

void Transformer::init_random(uint64_t seed) {
  const double std = 0.02, residual_std = std / std::sqrt(2.0 * std::max<int64_t>(num_layers(), 1));
  uint64_t stream = 0;
  for (auto& [name, v] : named_parameters()) {
    Tensor& t = const_cast<Variable&>(v).mutable_data();
    const bool is_norm = name.find("norm") != std::string::npos;
    const bool is_bias = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    const bool residual = name.find("o_proj") != std::string::npos || name.find("down_proj") != std::string::npos;
    if (is_norm) t.fill_(1.0);
    else if (is_bias) t.zero_();
    else t.copy_(randn(t.shape(), Philox(seed, ++stream), t.dtype(), residual ? residual_std : std));
  }
}

Transformer Transformer::load(const std::string& dir, DType dtype) {
  if (io::is_gguf(dir)) {  // one llama.cpp file: config from its metadata, weights dequantised
    io::GgufFile file(dir);
    io::ModelConfig config = io::gguf_model_config(file);
    Transformer model(config, dtype);
    std::map<std::string, Tensor> weights;
    for (auto& [name, t] : io::gguf_model_tensors(file, config, dtype)) weights.emplace(name, std::move(t));
    for (auto& [name, v] : model.named_parameters()) const_cast<Variable&>(v).mutable_data() = weights.at(name);
    return model;
  }
  io::ModelConfig config = io::load_config(dir + "/config.json");
  io::Checkpoint ckpt(dir);
  io::check_tensors(ckpt, config);
  Transformer model(config, dtype);
  for (auto& [name, v] : model.named_parameters()) const_cast<Variable&>(v).mutable_data() = ckpt.load(name, dtype);
  return model;
}

void Transformer::save(const std::string& dir, DType dtype) const {
  std::filesystem::create_directories(dir);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [name, v] : named_parameters()) tensors.emplace_back(name, v.data().to(dtype));
  io::save_safetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
  io::save_config(dir + "/config.json", config_);
}

KvCache Transformer::make_cache(int64_t batch, int64_t capacity) const {
  KvCache cache;
  cache.capacity = capacity;
  for (const Layer& L : layers_) {
    cache.k.push_back(Tensor::zeros({batch, capacity, L.n_kv_heads, config_.head_dim}, dtype_, device()));
    cache.v.push_back(Tensor::zeros({batch, capacity, L.n_kv_heads, config_.head_dim}, dtype_, device()));
  }
  return cache;
}

// x W^T + b, through the layer's hooks: `project` when it takes this projection, else linear + `adapt`.
static Variable projection(Proj p, const Variable& x, const Variable& w, const Variable& b, const LayerHooks* hooks) {
  if (hooks && hooks->project) {
    Variable y = hooks->project(p, x, w, b);
    if (y.defined()) return y;
  }
  Variable y = ag::linear(x, w, b);
  return hooks && hooks->adapt ? hooks->adapt(p, x, y) : y;
}

Variable Transformer::block(int64_t index, const Variable& h, const ops::RopeTables& rope, const LayerHooks* hooks,
                            KvCache* cache) const {
  const Layer& L = layers_[static_cast<size_t>(index)];
  const double eps = config_.rms_norm_eps;
  auto project = [&](Proj p, const Variable& x, const Variable& w, const Variable& b) { return projection(p, x, w, b, hooks); };

  // --- attention --- (a layer whose heads were all pruned keeps only its o_proj bias)
  Variable x = ag::rmsnorm(h, L.input_norm, eps);
  Variable h1 = h;
  if (L.n_heads > 0) h1 = ag::add(h, attention_block(index, x, rope, hooks, cache));
  else if (L.bo.defined()) h1 = ag::add_bias(h, L.bo);

  // --- MLP --- (likewise for a layer whose neurons were all pruned)
  if (L.n_ff == 0) return L.b_down.defined() ? ag::add_bias(h1, L.b_down) : h1;
  Variable x2 = ag::rmsnorm(h1, L.post_norm, eps);
  Variable g = project(Proj::gate, x2, L.w_gate, L.b_gate), u = project(Proj::up, x2, L.w_up, L.b_up);
  // silu(g) * u, times the neuron gates in the same pass when there are gates.
  Variable m = hooks && hooks->neuron_gate.defined() ? ag::swiglu_gated(g, u, hooks->neuron_gate) : ag::swiglu(g, u);
  return ag::add(h1, project(Proj::down, m, L.w_down, L.b_down));
}

Variable Transformer::attention_block(int64_t index, const Variable& x, const ops::RopeTables& rope,
                                      const LayerHooks* hooks, KvCache* cache) const {
  const Layer& L = layers_[static_cast<size_t>(index)];
  const int64_t B = x.shape()[0], T = x.shape()[1], hd = config_.head_dim;
  const double eps = config_.rms_norm_eps;
  auto project = [&](Proj p, const Variable& in, const Variable& w, const Variable& b) {
    return projection(p, in, w, b, hooks);
  };
  Variable q = ag::reshape(project(Proj::q, x, L.wq, L.bq), {B, T, L.n_heads, hd});
  Variable k = ag::reshape(project(Proj::k, x, L.wk, L.bk), {B, T, L.n_kv_heads, hd});
  Variable v = ag::reshape(project(Proj::v, x, L.wv, L.bv), {B, T, L.n_kv_heads, hd});
  if (L.q_norm.defined()) {  // Qwen 3: RMSNorm over each head's vector, before RoPE
    q = ag::rmsnorm(q, L.q_norm, eps);
    k = ag::rmsnorm(k, L.k_norm, eps);
  }
  q = ag::rope(q, rope);
  k = ag::rope(k, rope);
  if (cache) {
    // Append this step's keys/values; attend over everything cached so far (no gradient).
    const int64_t start = cache->length;
    KOFF_CHECK(start + T <= cache->capacity, "KV cache full: {} + {} positions exceed its capacity {}", start, T,
               cache->capacity);
    Tensor& ck = cache->k[static_cast<size_t>(index)];
    Tensor& cv = cache->v[static_cast<size_t>(index)];
    Tensor slot_k = ck.slice(1, start, start + T), slot_v = cv.slice(1, start, start + T);
    slot_k.copy_(k.data());
    slot_v.copy_(v.data());
    k = Variable(ck.slice(1, 0, start + T).contiguous());
    v = Variable(cv.slice(1, 0, start + T).contiguous());
  }
  Variable mem_k = hooks ? hooks->mem_k : Variable(), mem_v = hooks ? hooks->mem_v : Variable();
  Variable mem_gate = hooks && mem_k.defined() ? hooks->mem_gate : Variable();
  if (!L.head_group.empty()) {
    k = expand_groups(k, L.head_group), v = expand_groups(v, L.head_group);
    mem_k = expand_groups(mem_k, L.head_group), mem_v = expand_groups(mem_v, L.head_group);
    if (mem_gate.defined()) {  // [B, G] -> [B, H] like the slots
      const int64_t Bg = mem_gate.data().size(0), G = mem_gate.data().size(1);
      mem_gate = Variable(expand_groups(Variable(mem_gate.data().reshape({Bg, 1, G, 1})), L.head_group)
                              .data()
                              .reshape({Bg, L.n_heads}));
    }
  }
  Variable a = ag::attention(q, k, v, mem_k, mem_v, 1.0 / std::sqrt(static_cast<double>(hd)), true, mem_gate);
  if (hooks && hooks->head_gate.defined()) a = ag::mul_groups(a, hooks->head_gate, hd);
  return project(Proj::o, ag::reshape(a, {B, T, L.n_heads * hd}), L.wo, L.bo);
}

Variable Transformer::hidden(const Tensor& ids, const ForwardOptions& options) const {
  KOFF_CHECK(ids.dim() == 2, "transformer input ids must be [batch, tokens], got shape {}", shape_str(ids.shape()));
  KOFF_CHECK(!options.hooks || static_cast<int64_t>(options.hooks->size()) == num_layers(),
             "{} layer hooks given for a model of {} layers", options.hooks ? options.hooks->size() : 0, num_layers());
  const int64_t T = ids.size(1);
  const int64_t start = options.cache ? options.cache->length : 0;
  // Tables in f32 (f64 for gradient checks), then in the compute dtype on the model's device (bf16
  // cos/sin, as Hugging Face casts them to the activations' dtype).
  ops::RopeTables rope = ops::rope_tables(start, T, config_.head_dim, config_.rope_theta, config_.rope_scaling,
                                          dtype_ == DType::f64 ? DType::f64 : DType::f32);
  rope.cos = rope.cos.to(dtype_).to(device()), rope.sin = rope.sin.to(dtype_).to(device());
  Variable h = ag::embedding(embed_, ids.to(device()));
  for (int64_t i = 0; i < num_layers(); ++i)
    h = block(i, h, rope, options.hooks ? &(*options.hooks)[static_cast<size_t>(i)] : nullptr, options.cache);
  if (options.cache) options.cache->length += T;
  return ag::rmsnorm(h, final_norm_, config_.rms_norm_eps);
}

Variable Transformer::logits(const Tensor& ids, const ForwardOptions& options) const {
  return ag::linear(hidden(ids, options), lm_head());
}

Variable Transformer::loss(const Tensor& ids, const Tensor& targets, const ForwardOptions& options,
                           double normaliser) const {
  check_same_shape(ids, targets, "Transformer::loss ids/targets");
  Variable h = hidden(ids, options);
  const int64_t d = config_.hidden_size;
  return ag::linear_cross_entropy(ag::reshape(h, {-1, d}), lm_head(), targets.reshape({-1}).to(device()), normaliser);
}

}  // namespace koff::nn
