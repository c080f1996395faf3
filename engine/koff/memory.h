// Per-domain memories (KOFF_METHOD.md section 5): LoRA adapters and KV memories, one set per domain.
//
// Parameters live in per-domain tables so that a batch mixing domains routes each sequence to its
// own memory with a gather (the embedding op, whose backward scatter-adds into the right domain):
//   LoRA on projection W of layer l:  A_table [D, r*in], B_table [D, out*r]
//       y = W x + (alpha/r) * B_d (A_d x),  A Kaiming-uniform (bound 1/sqrt(in)), B = 0
//   KV memory of layer l:  K_table, V_table [D, m*G*hd]  ->  mem_k/mem_v [B, m, G, hd]
//   memory gate of layer l (kv_init "neutral" only):  gate_table [D, G] -> mem_gate [B, G], init 0
// The gate scales the memory's attention mass per domain, layer and KV head (ops::attention): 0 at init,
// so training starts from the base model's attention exactly, and it opens where the memory helps.
// It is kept >= 0 by project_gates() after each optimizer step (a projection: a parameterisation such as
// g = softplus(x) or x^2 cannot start at exactly 0 with a nonzero gradient).
// Memory keys are position-free: they are used as given, in the rotated (post-RoPE, post-k-norm)
// space of the real keys, and every query sees them.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "engine/io/safetensors.h"
#include "engine/nn/transformer.h"

namespace koff::offload {

using autograd::Variable;
using nn::Proj;

struct MemoryConfig {
  bool lora = true;
  bool kv = true;
  int64_t rank = 8;
  double alpha = 16;
  std::vector<Proj> targets = {Proj::q, Proj::k, Proj::v, Proj::o, Proj::gate, Proj::up, Proj::down};
  int64_t slots = 16;               // m, memory slots per layer and KV head
  // "text": the frozen model's own keys/values of a domain text; "random": N(0, 0.02); "neutral": as
  // "text", plus a memory gate per layer and KV head that starts at 0 (the memory starts invisible).
  std::string kv_init = "random";  // the default by measurement: bench/RESULTS.md "KV memory init"
  bool kv_gated() const { return kv && kv_init == "neutral"; }
  nlohmann::json to_json() const;
  static MemoryConfig from_json(const nlohmann::json& j);
};

Proj proj_from_name(const std::string& name);  // "q", "q_proj", ... -> Proj

class MemoryBank {
 public:
  MemoryBank() = default;
  // Allocates the tables of D domains for `model`'s shapes and initialises them (LoRA A uniform,
  // B zero; KV random N(0, 0.02), see init_kv_from_text).
  MemoryBank(const nn::Transformer& model, const MemoryConfig& config, std::vector<std::string> domains, uint64_t seed);

  // kv_init "text": for each domain, run the frozen model over `slots` consecutive tokens of its
  // text (from a random offset drawn with `seed`) and copy the keys/values it computes.
  void init_kv_from_text(const nn::Transformer& model, const std::vector<std::vector<int32_t>>& streams, uint64_t seed);

  const MemoryConfig& config() const { return config_; }
  const std::vector<std::string>& domains() const { return domains_; }
  int64_t kv_heads() const { return kv_heads_; }  // of the base model the bank was made for
  Device device() const;                          // where the tables live (the model's device)
  std::vector<Variable> lora_parameters() const;
  std::vector<Variable> kv_parameters() const;  // keys, values and (kv_init "neutral") the gate tables
  // Clamps the memory gates at 0 (after each optimizer step); a no-op without gates.
  void project_gates();

  // Layer hooks for a batch whose sequence b belongs to domain domain_ids[b] (i64 [B]); gates
  // (z per layer) are added when given.
  std::vector<nn::LayerHooks> hooks(const Tensor& domain_ids, const std::vector<Variable>* head_gates = nullptr,
                                    const std::vector<Variable>* neuron_gates = nullptr) const;

  // All tensors of the bank (for checkpoints), and their restore.
  io::NamedTensors state() const;
  void load_state(const std::function<Tensor(const std::string&)>& get);

  struct LayerTables {
    std::map<Proj, Variable> lora_a, lora_b;  // [D, r*in], [D, out*r]
    Variable kv_k, kv_v;                      // [D, m*G*hd]
    Variable kv_gate;                         // [D, G] (kv_init "neutral"), else undefined
    std::map<Proj, std::pair<int64_t, int64_t>> io;  // proj -> (in, out)
  };
  std::vector<LayerTables>& layers() { return layers_; }
  const std::vector<LayerTables>& layers() const { return layers_; }

 private:
  MemoryConfig config_;
  std::vector<std::string> domains_;
  int64_t kv_heads_ = 0, head_dim_ = 0;
  DType compute_dtype_ = DType::f32;  // the model's: what hooks() casts the tables to
  std::vector<LayerTables> layers_;
};

}  // namespace koff::offload
