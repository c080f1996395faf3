// config.json of the model families koff runs: Llama 3.x ("llama"), Qwen 2.5 ("qwen2"), Qwen 3
// ("qwen3"); and the Hugging Face tensor names and shapes that a config implies.
//
// Family differences that matter here:
//   llama  GQA; rope_scaling of type llama3 (3.1+); tied embeddings in 3.2 1B/3B; `attention_bias`
//          puts a bias on q, k, v AND o; `mlp_bias` on gate, up, down; head_dim defaults to d / H.
//   qwen2  q, k and v always have a bias, o never (the modelling code hard-codes it; there is no key).
//   qwen3  per-head RMSNorm of q and k (`q_norm`, `k_norm`, weight [head_dim]); head_dim explicit and
//          independent of d / H (missing, it is 128, as in transformers' Qwen3Config).
// Keys the engine needs (model_type and the five sizes) are required; the others take the defaults
// of transformers' config class. Anything that would change the math and that koff does not
// implement (another hidden_act, sliding-window attention, a RoPE scaling other than llama3) is an
// error rather than silently ignored.
//
// Pruned backbones (ARCHITECTURE.md "Pruned backbone") carry a "koff" object:
//   "koff": {"layers": [{"heads_per_kv_group": [4, 2, 3], "intermediate_size": 5120}, ...],
//            "target_sparsity": ..., "achieved_sparsity": ..., ...}
// Query heads are pruned one by one and a KV head goes only with its last query head, so the kept
// query heads of a layer are not spread evenly over its kept KV heads: the per-group counts are what
// attention needs (query heads are stored group by group, as in Hugging Face's repeat_kv layout).
// {"num_attention_heads": H, "num_key_value_heads": G, "intermediate_size": F} is read too, when
// H / G heads per group is meant.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "engine/ops/ops.h"
#include "engine/tensor/tensor.h"

namespace koff::io {

class Checkpoint;

struct LayerWidths {
  std::vector<int64_t> heads_per_kv_group;  // kept query heads of each kept KV head, in storage order
  int64_t intermediate_size = 0;            // kept MLP neurons
  int64_t num_attention_heads() const;
  int64_t num_key_value_heads() const { return static_cast<int64_t>(heads_per_kv_group.size()); }
  bool operator==(const LayerWidths&) const = default;
};

struct ModelConfig {
  std::string model_type;  // "llama", "qwen2", "qwen3"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  ops::RopeScaling rope_scaling{};  // factor 0: no scaling; otherwise llama3 scaling
  int64_t max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (always true for qwen2); llama and qwen3 also bias o
  bool mlp_bias = false;        // llama only
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;     // config.json may give one id or a list
  std::string torch_dtype;                // "bfloat16", "float32", ... ("" when absent)
  std::vector<LayerWidths> layer_widths;  // empty: every layer at full width
  nlohmann::json koff;                    // the "koff" object as read (null when absent)

  bool has_rope_scaling() const { return rope_scaling.factor > 0; }
  bool has_qkv_bias() const { return attention_bias; }
  bool has_o_bias() const { return attention_bias && model_type != "qwen2"; }
  bool has_qk_norm() const { return model_type == "qwen3"; }
  bool is_pruned() const { return !layer_widths.empty(); }
  // The widths of layer i: its override, or the full widths split evenly over the KV heads.
  LayerWidths layer(int64_t i) const;
};

// Reads and validates config.json: unsupported model_type, a missing or mistyped key, an
// inconsistent value are each one koff::Error naming the file and the key.
ModelConfig load_config(const std::filesystem::path& path);
// The same from parsed JSON; `source` names it in errors.
ModelConfig parse_config(const nlohmann::json& j, const std::string& source);
// A config.json that transformers loads (LlamaForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM), plus
// the "koff" object with layer_widths written into koff.layers.
nlohmann::json to_json(const ModelConfig& config);
void save_config(const std::filesystem::path& path, const ModelConfig& config);  // atomic

struct TensorSpec {
  std::string name;
  Shape shape;
};
// Hugging Face names and shapes of every weight of the model, honouring per-layer widths.
std::vector<TensorSpec> expected_tensors(const ModelConfig& config);
// One koff::Error listing every missing, unexpected, mis-shaped and non-floating tensor. A tied
// model may still carry lm_head.weight (some exports do): accepted when its shape is right.
void check_tensors(const Checkpoint& checkpoint, const ModelConfig& config);

}  // namespace koff::io
