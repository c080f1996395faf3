// Final mask applied (KOFF_METHOD.md section 7): the masked dense model, the compacted backbone, and
// the memories exported per domain (koff layout and PEFT layout).
//
// Gates act on a head's attention output and on a neuron's activation, so a kept unit's z_det is
// folded into the o_proj / down_proj COLUMNS it multiplies (and into the matching columns of those
// projections' LoRA A, which sees the gated input too). Removed units drop their q rows and o
// columns (a KV group its k/v rows once all its heads are gone), or their gate/up rows and down
// column, with the matching LoRA rows/columns.
#pragma once

#include <string>

#include "engine/koff/gates.h"
#include "engine/koff/memory.h"

namespace koff::offload {

// Base weights with z folded in (removed units' columns zero): same shapes as the base, and the same
// logits as the base under the final mask's gate hooks.
nn::Transformer masked_dense(const nn::Transformer& base, const FinalMask& mask);

// Removed rows/columns deleted; per-layer widths in config.layer_widths and the "koff" object.
// Gives the masked dense model's logits to rounding.
nn::Transformer compact(const nn::Transformer& base, const FinalMask& mask, const nlohmann::json& provenance);

// One domain's memory, sliced to the compacted backbone, written to dir/memory.safetensors +
// dir/memory.json (memory settings, domain, and the backbone's fingerprint), and its LoRA in PEFT's
// layout against the masked dense backbone (dir/peft/adapter_config.json + adapter_model.safetensors).
void export_memory(const MemoryBank& bank, int64_t domain, const FinalMask& mask, const nn::Transformer& compacted,
                   const std::string& dir);

// A memory loaded for a compacted backbone: layer hooks for batch 1. Errors when the memory was made
// for another backbone (fingerprint mismatch) or is malformed.
struct LoadedMemory {
  MemoryConfig config;
  std::string domain;
  // per layer: proj -> (A [r, in], B [out, r]); KV [1, m, G, hd]
  std::vector<std::map<Proj, std::pair<Tensor, Tensor>>> lora;
  std::vector<Tensor> kv_keys, kv_values;
  std::vector<Tensor> kv_gates;  // per layer [1, G] f32 when the memory has a gate (undefined/short: ungated)
  std::vector<nn::LayerHooks> hooks() const;
};
LoadedMemory load_memory(const std::string& dir, const nn::Transformer& backbone);

// A stable description of a backbone's shapes (per-layer widths, sizes): memories record it.
std::string backbone_fingerprint(const io::ModelConfig& config);

}  // namespace koff::offload
