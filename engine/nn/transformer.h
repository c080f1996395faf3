// The decoder-only transformer of Llama 3.x, Qwen 2.5 and Qwen 3, built on autograd.
//
//   h = embed(ids)
//   per layer:  x = rmsnorm(h);  q,k,v = x Wq,Wk,Wv (+ biases: Qwen 2.5);  q,k = rmsnorm per head
//               (Qwen 3);  q,k = rope(q,k);  a = attention(q, [mem_k; k], [mem_v; v]) (GQA, causal,
//               memory slots seen by all);  a *= head gate;  h += a Wo
//               x = rmsnorm(h);  m = silu(x Wg) * (x Wu);  m *= neuron gate;  h += m Wd
//   logits = rmsnorm(h) W_lm   (W_lm = embed when tied)
//
// Weights are Variables: frozen (requires_grad false) for a base model under knowledge offloading,
// trainable for pretraining. Widths may differ per layer (a compacted, pruned backbone). The hooks
// in LayerHooks are where the method plugs in: gates, KV memories and LoRA (engine/koff).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "engine/io/model_config.h"

namespace koff::nn {

using autograd::Variable;

enum class Proj { q, k, v, o, gate, up, down };
const char* proj_name(Proj p);  // "q_proj", ..., "down_proj"

struct Layer {
  int64_t n_heads = 0, n_kv_heads = 0, n_ff = 0;
  // Query head -> KV head, only when a pruned layer's KV groups keep unequal numbers of heads (the
  // attention kernel assumes equal groups; such layers expand K/V to one head per query head).
  std::vector<int64_t> head_group;
  Variable input_norm, post_norm;
  Variable wq, wk, wv, wo, bq, bk, bv, bo;  // biases undefined unless the family has them
  Variable q_norm, k_norm;              // Qwen 3 only
  Variable w_gate, w_up, w_down, b_gate, b_up, b_down;  // MLP biases: Llama mlp_bias only
  Variable& proj(Proj p);
};

// Per-layer additions to the base computation; every member is optional.
struct LayerHooks {
  Variable head_gate;    // [n_heads]: multiplies each head's attention output before o_proj
  Variable neuron_gate;  // [n_ff]: multiplies silu(gate) * up before down_proj
  Variable mem_k, mem_v; // [B, m, n_kv_heads, head_dim]: memory slots every query sees
  Variable mem_gate;     // [B, n_kv_heads] or undefined: the memory's attention mass (ops::attention)
  // Called after each projection: returns the projection's output, e.g. y + LoRA(x).
  std::function<Variable(Proj, const Variable& x, const Variable& y)> adapt;
  // Replaces a projection whole: returns x W^T + b with whatever it adds, computed its own way
  // (MemoryBank's per-domain LoRA as one autograd node, autograd::linear_lora). An empty function
  // (the default) or one returning an undefined Variable for `p` leaves the projection to ag::linear
  // and adapt.
  std::function<Variable(Proj, const Variable& x, const Variable& w, const Variable& b)> project;
};

// Keys and values of past positions for incremental decoding (batch size 1 or more, no gradient).
struct KvCache {
  std::vector<Tensor> k, v;  // per layer [B, max_len, G, hd]
  int64_t length = 0;        // positions filled
  int64_t capacity = 0;
};

struct ForwardOptions {
  const std::vector<LayerHooks>* hooks = nullptr;  // one per layer, or null
  KvCache* cache = nullptr;                         // incremental decoding: appends to it
};

class Transformer {
 public:
  Transformer() = default;
  // Allocates weights for `config` (uninitialised; call init_random or load).
  Transformer(const io::ModelConfig& config, DType dtype = DType::f32);

  // Loads a Hugging Face model directory (config.json + safetensors, sharded or not), or a GGUF file
  // (dequantised; see engine/io/gguf.h). Frozen.
  static Transformer load(const std::string& dir, DType dtype = DType::f32);
  // Writes config.json + model.safetensors (weights stored as `dtype`).
  void save(const std::string& dir, DType dtype = DType::bf16) const;

  // Small-normal init (std 0.02; residual outputs scaled by 1/sqrt(2L)), norms at 1. For pretraining.
  void init_random(uint64_t seed);
  void set_requires_grad(bool value);
  // Moves every weight to `device` (e.g. cuda:0); inputs given on the CPU are moved by the forward.
  void to(Device device);
  Device device() const { return embed_.data().device(); }
  DType dtype() const { return dtype_; }

  const io::ModelConfig& config() const { return config_; }
  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  Layer& layer(int64_t i) { return layers_[static_cast<size_t>(i)]; }
  const Layer& layer(int64_t i) const { return layers_[static_cast<size_t>(i)]; }
  const Variable& embed() const { return embed_; }
  const Variable& lm_head() const { return config_.tie_word_embeddings ? embed_ : lm_head_; }
  // Hugging Face names -> parameters (the lm_head only when untied).
  std::vector<std::pair<std::string, Variable>> named_parameters() const;
  int64_t num_parameters() const;

  using ForwardOptions = nn::ForwardOptions;
  // Final normalised hidden states [B, T, d] for ids [B, T] (i32/i64).
  Variable hidden(const Tensor& ids, const ForwardOptions& options = {}) const;
  // Logits [B, T, V].
  Variable logits(const Tensor& ids, const ForwardOptions& options = {}) const;
  // Mean next-token cross-entropy: targets [B, T] (ignore_index -100 where no target), through the
  // fused chunked lm_head + loss (no [B*T, V] logits are held). normaliser as in autograd::cross_entropy.
  Variable loss(const Tensor& ids, const Tensor& targets, const ForwardOptions& options = {},
                double normaliser = 0) const;

  KvCache make_cache(int64_t batch, int64_t capacity) const;

 private:
  Variable block(int64_t index, const Variable& h, const ops::RopeTables& rope, const LayerHooks* hooks,
                 KvCache* cache) const;
  Variable attention_block(int64_t index, const Variable& x, const ops::RopeTables& rope, const LayerHooks* hooks,
                           KvCache* cache) const;

  io::ModelConfig config_;
  DType dtype_ = DType::f32;
  Variable embed_, final_norm_, lm_head_;
  std::vector<Layer> layers_;
};

}  // namespace koff::nn
