#include "engine/koff/export.h"

#include <filesystem>
#include <fstream>

#include "engine/io/atomic_file.h"

namespace koff::offload {

namespace ag = autograd;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::vector<int64_t> kept_indices(const std::vector<bool>& keep) {
  std::vector<int64_t> out;
  for (size_t i = 0; i < keep.size(); ++i)
    if (keep[i]) out.push_back(static_cast<int64_t>(i));
  return out;
}

// Export works on host copies in f32 (f64 in gradient checks): the CPU backend computes in those,
// and a model trained on a GPU in bf16 holds its weights there in bf16.
DType host_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

// Rows (dim 0) or columns (dim 1) of a 2-D tensor, into a host tensor: the listed blocks of `block`
// rows/columns each.
Tensor take(const Tensor& w, int64_t dim, const std::vector<int64_t>& blocks, int64_t block) {
  Shape shape = w.shape();
  shape[dim] = static_cast<int64_t>(blocks.size()) * block;
  Tensor out = Tensor::empty(shape, host_dtype(w.dtype()));
  for (size_t i = 0; i < blocks.size(); ++i)
    out.slice(dim, static_cast<int64_t>(i) * block, static_cast<int64_t>(i + 1) * block)
        .copy_(w.slice(dim, blocks[i] * block, (blocks[i] + 1) * block));
  return out;
}

// Multiplies column block b of w (in place) by z[b].
void scale_column_blocks(Tensor& w, const Tensor& z, int64_t block) {
  const auto zs = z.to_vector<double>();
  for (size_t b = 0; b < zs.size(); ++b) {
    Tensor cols = w.slice(1, static_cast<int64_t>(b) * block, static_cast<int64_t>(b + 1) * block);
    cols.copy_(ops::scale(cols.contiguous(), zs[b]));
  }
}

Tensor kept_values(const Tensor& z, const std::vector<int64_t>& kept) {
  Tensor out = Tensor::empty({static_cast<int64_t>(kept.size())}, DType::f64);
  for (size_t i = 0; i < kept.size(); ++i) out.data<double>()[i] = z.at({kept[i]});
  return out;
}

struct LayerPlan {
  std::vector<int64_t> heads, groups, neurons, heads_per_group;
};

LayerPlan plan(const FinalMask& mask, int64_t layer, int64_t rep) {
  LayerPlan p;
  p.heads = kept_indices(mask.keep_heads[layer]);
  p.neurons = kept_indices(mask.keep_neurons[layer]);
  for (int64_t h : p.heads) {
    const int64_t g = h / rep;
    if (p.groups.empty() || p.groups.back() != g) {
      p.groups.push_back(g);
      p.heads_per_group.push_back(0);
    }
    ++p.heads_per_group.back();
  }
  return p;
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace

std::string backbone_fingerprint(const io::ModelConfig& c) {
  json j = {{"model_type", c.model_type}, {"vocab", c.vocab_size}, {"hidden", c.hidden_size}, {"layers", c.num_hidden_layers},
            {"head_dim", c.head_dim}};
  json widths = json::array();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    io::LayerWidths w = c.layer(l);
    widths.push_back({w.heads_per_kv_group, w.intermediate_size});
  }
  j["widths"] = widths;
  return fmt::format("{:016x}", fnv1a(j.dump()));
}

nn::Transformer masked_dense(const nn::Transformer& base, const FinalMask& mask) {
  nn::Transformer out(base.config(), host_dtype(base.dtype()));  // on the host
  auto src = base.named_parameters();
  auto dst = out.named_parameters();
  for (size_t i = 0; i < src.size(); ++i) const_cast<ag::Variable&>(dst[i].second).mutable_data().copy_(src[i].second.data());
  const int64_t hd = base.config().head_dim;
  for (int64_t l = 0; l < out.num_layers(); ++l) {
    scale_column_blocks(out.layer(l).wo.mutable_data(), mask.z_heads[l], hd);
    scale_column_blocks(out.layer(l).w_down.mutable_data(), mask.z_neurons[l], 1);
  }
  return out;
}

nn::Transformer compact(const nn::Transformer& base, const FinalMask& mask, const json& provenance) {
  const io::ModelConfig& bc = base.config();
  const int64_t hd = bc.head_dim, rep = bc.num_attention_heads / bc.num_key_value_heads;
  io::ModelConfig c = bc;
  c.layer_widths.clear();
  std::vector<LayerPlan> plans;
  for (int64_t l = 0; l < bc.num_hidden_layers; ++l) {
    plans.push_back(plan(mask, l, rep));
    io::LayerWidths w;
    w.heads_per_kv_group = plans.back().heads_per_group;
    w.intermediate_size = static_cast<int64_t>(plans.back().neurons.size());
    c.layer_widths.push_back(w);
  }
  c.koff = provenance.is_object() ? provenance : json::object();
  c.koff["target_sparsity"] = provenance.value("target_sparsity", 0.0);
  c.koff["achieved_sparsity"] = mask.sparsity();
  c.koff["removed_parameters"] = mask.removed;
  c.koff["prunable_parameters"] = mask.prunable;
  c.koff["removed_fraction_of_all"] = mask.removed / total_parameters(bc);

  nn::Transformer out(c, host_dtype(base.dtype()));  // on the host, whatever device base is on
  // Everything that is not pruned is copied as is (embeddings, norms, lm_head, q/k norms).
  auto src = base.named_parameters();
  std::map<std::string, Tensor> by_name;
  for (const auto& [n, v] : src) by_name[n] = v.data();
  for (const auto& [n, v] : out.named_parameters())
    if (v.data().shape() == by_name.at(n).shape()) const_cast<ag::Variable&>(v).mutable_data().copy_(by_name.at(n));
  for (int64_t l = 0; l < out.num_layers(); ++l) {
    const nn::Layer& B = base.layer(l);
    nn::Layer& L = out.layer(l);
    const LayerPlan& p = plans[static_cast<size_t>(l)];
    if (!p.heads.empty()) {
      L.wq.mutable_data().copy_(take(B.wq.data(), 0, p.heads, hd));
      L.wk.mutable_data().copy_(take(B.wk.data(), 0, p.groups, hd));
      L.wv.mutable_data().copy_(take(B.wv.data(), 0, p.groups, hd));
      Tensor wo = take(B.wo.data(), 1, p.heads, hd);
      scale_column_blocks(wo, kept_values(mask.z_heads[l], p.heads), hd);
      L.wo.mutable_data().copy_(wo);
      if (B.bq.defined()) {
        L.bq.mutable_data().copy_(take(B.bq.data().unsqueeze(1), 0, p.heads, hd).view({-1}));
        L.bk.mutable_data().copy_(take(B.bk.data().unsqueeze(1), 0, p.groups, hd).view({-1}));
        L.bv.mutable_data().copy_(take(B.bv.data().unsqueeze(1), 0, p.groups, hd).view({-1}));
      }
    }
    if (!p.neurons.empty()) {
      L.w_gate.mutable_data().copy_(take(B.w_gate.data(), 0, p.neurons, 1));
      L.w_up.mutable_data().copy_(take(B.w_up.data(), 0, p.neurons, 1));
      Tensor wd = take(B.w_down.data(), 1, p.neurons, 1);
      scale_column_blocks(wd, kept_values(mask.z_neurons[l], p.neurons), 1);
      L.w_down.mutable_data().copy_(wd);
      if (B.b_gate.defined()) {
        L.b_gate.mutable_data().copy_(take(B.b_gate.data().unsqueeze(1), 0, p.neurons, 1).view({-1}));
        L.b_up.mutable_data().copy_(take(B.b_up.data().unsqueeze(1), 0, p.neurons, 1).view({-1}));
      }
    }
  }
  return out;
}

void export_memory(const MemoryBank& bank, int64_t d, const FinalMask& mask, const nn::Transformer& compacted,
                   const std::string& dir) {
  const MemoryConfig& mc = bank.config();
  const io::ModelConfig& cc = compacted.config();
  const int64_t r = mc.rank, m = mc.slots;
  const int64_t hd = cc.head_dim;
  const int64_t rep = static_cast<int64_t>(mask.keep_heads[0].size()) / bank.kv_heads();
  io::NamedTensors compact_t, peft_t;
  for (size_t l = 0; l < bank.layers().size(); ++l) {
    const auto& t = bank.layers()[l];
    const LayerPlan p = plan(mask, static_cast<int64_t>(l), rep);
    for (const auto& [proj, a_table] : t.lora_a) {
      const auto [in, out] = t.io.at(proj);
      Tensor a = a_table.data().select(0, d).reshape({r, in}).to(Device::cpu()).clone();
      Tensor b = t.lora_b.at(proj).data().select(0, d).reshape({out, r}).to(Device::cpu()).clone();
      // PEFT (masked dense backbone): the gated input of o/down carries z in A's columns.
      Tensor a_dense = a.clone();
      if (proj == Proj::o) scale_column_blocks(a_dense, mask.z_heads[l], hd);
      if (proj == Proj::down) scale_column_blocks(a_dense, mask.z_neurons[l], 1);
      const std::string module = (proj == Proj::gate || proj == Proj::up || proj == Proj::down) ? "mlp" : "self_attn";
      const std::string key = fmt::format("base_model.model.model.layers.{}.{}.{}", l, module, nn::proj_name(proj));
      peft_t.emplace_back(key + ".lora_A.weight", a_dense);
      peft_t.emplace_back(key + ".lora_B.weight", b);
      // Compacted backbone: drop the rows/columns of removed units.
      Tensor ca = a, cb = b;
      switch (proj) {
        case Proj::q: cb = take(b, 0, p.heads, hd); break;
        case Proj::k:
        case Proj::v: cb = take(b, 0, p.groups, hd); break;
        case Proj::o:
          ca = take(a, 1, p.heads, hd);
          scale_column_blocks(ca, kept_values(mask.z_heads[l], p.heads), hd);
          break;
        case Proj::gate:
        case Proj::up: cb = take(b, 0, p.neurons, 1); break;
        case Proj::down:
          ca = take(a, 1, p.neurons, 1);
          scale_column_blocks(ca, kept_values(mask.z_neurons[l], p.neurons), 1);
          break;
      }
      compact_t.emplace_back(fmt::format("layers.{}.{}.lora_A", l, nn::proj_name(proj)), ca);
      compact_t.emplace_back(fmt::format("layers.{}.{}.lora_B", l, nn::proj_name(proj)), cb);
    }
    if (t.kv_k.defined()) {
      const int64_t G = t.kv_k.data().size(1) / (m * hd);
      Tensor k = t.kv_k.data().select(0, d).reshape({m, G, hd}).to(Device::cpu());
      Tensor v = t.kv_v.data().select(0, d).reshape({m, G, hd}).to(Device::cpu());
      Tensor ck = Tensor::empty({m, static_cast<int64_t>(p.groups.size()), hd}, k.dtype()), cv = ck.clone();
      for (size_t g = 0; g < p.groups.size(); ++g) {
        const int64_t src = p.groups[g];
        ck.slice(1, static_cast<int64_t>(g), static_cast<int64_t>(g) + 1).copy_(k.slice(1, src, src + 1));
        cv.slice(1, static_cast<int64_t>(g), static_cast<int64_t>(g) + 1).copy_(v.slice(1, src, src + 1));
      }
      compact_t.emplace_back(fmt::format("layers.{}.kv_keys", l), ck);
      compact_t.emplace_back(fmt::format("layers.{}.kv_values", l), cv);
      if (t.kv_gate.defined()) {  // the memory gate of the kept KV heads, [G']
        Tensor gate = t.kv_gate.data().select(0, d).to(Device::cpu());
        Tensor cg = Tensor::empty({static_cast<int64_t>(p.groups.size())}, gate.dtype());
        for (size_t g = 0; g < p.groups.size(); ++g)
          cg.slice(0, static_cast<int64_t>(g), static_cast<int64_t>(g) + 1)
              .copy_(gate.slice(0, p.groups[g], p.groups[g] + 1));
        compact_t.emplace_back(fmt::format("layers.{}.kv_gate", l), cg);
      }
    }
  }
  fs::create_directories(fs::path(dir) / "peft");
  io::save_safetensors(fs::path(dir) / "memory.safetensors", compact_t);
  json meta = {{"domain", bank.domains()[static_cast<size_t>(d)]}, {"memory", mc.to_json()},
               {"backbone_fingerprint", backbone_fingerprint(cc)}};
  io::write_file_atomic(fs::path(dir) / "memory.json", meta.dump(2));
  if (!peft_t.empty()) {
    json targets = json::array();
    for (Proj p : mc.targets) targets.push_back(nn::proj_name(p));
    json adapter = {{"peft_type", "LORA"}, {"task_type", "CAUSAL_LM"}, {"r", r}, {"lora_alpha", mc.alpha},
                    {"lora_dropout", 0.0}, {"target_modules", targets}, {"bias", "none"}, {"fan_in_fan_out", false},
                    {"use_rslora", false}, {"use_dora", false}, {"inference_mode", true},
                    {"init_lora_weights", true}, {"base_model_name_or_path", nullptr}};
    io::write_file_atomic(fs::path(dir) / "peft" / "adapter_config.json", adapter.dump(2));
    io::save_safetensors(fs::path(dir) / "peft" / "adapter_model.safetensors", peft_t, {{"format", "pt"}});
  }
}

LoadedMemory load_memory(const std::string& dir, const nn::Transformer& backbone) {
  const fs::path meta_path = fs::path(dir) / "memory.json";
  std::ifstream in(meta_path);
  KOFF_CHECK(in.good(), "{}: no memory.json (a memory directory has memory.json and memory.safetensors)", dir);
  json meta;
  try {
    meta = json::parse(in);
  } catch (const std::exception& e) {
    fail("{}: not valid JSON: {}", meta_path.string(), e.what());
  }
  const std::string want = backbone_fingerprint(backbone.config());
  KOFF_CHECK(meta.value("backbone_fingerprint", std::string()) == want,
             "{}: this memory was made for another backbone (fingerprint {}, this backbone's is {})", dir,
             meta.value("backbone_fingerprint", std::string("none")), want);
  LoadedMemory m;
  m.domain = meta.value("domain", std::string());
  m.config = MemoryConfig::from_json(meta.at("memory"));
  io::SafetensorsFile f(fs::path(dir) / "memory.safetensors");
  // In the backbone's dtype, on its device.
  const DType dt = backbone.dtype();
  const Device dev = backbone.device();
  m.lora.resize(static_cast<size_t>(backbone.num_layers()));
  for (int64_t l = 0; l < backbone.num_layers(); ++l) {
    if (m.config.lora)
      for (Proj p : m.config.targets) {
        Tensor a = f.load(fmt::format("layers.{}.{}.lora_A", l, nn::proj_name(p)), dt);
        Tensor b = f.load(fmt::format("layers.{}.{}.lora_B", l, nn::proj_name(p)), dt);
        const Tensor& w = const_cast<nn::Transformer&>(backbone).layer(l).proj(p).data();
        KOFF_CHECK(a.size(1) == w.size(1) && b.size(0) == w.size(0), "{}: LoRA of layer {} {} has shapes {} / {} for a weight {}",
                   dir, l, nn::proj_name(p), shape_str(a.shape()), shape_str(b.shape()), shape_str(w.shape()));
        m.lora[static_cast<size_t>(l)][p] = {a.to(dev), b.to(dev)};
      }
    if (m.config.kv) {
      m.kv_keys.push_back(f.load(fmt::format("layers.{}.kv_keys", l), dt).unsqueeze(0).contiguous().to(dev));
      m.kv_values.push_back(f.load(fmt::format("layers.{}.kv_values", l), dt).unsqueeze(0).contiguous().to(dev));
      // A memory gate ([G], kv_init "neutral") as [1, G] in attention's statistics dtype; absent: ungated.
      const std::string gate = fmt::format("layers.{}.kv_gate", l);
      if (f.has(gate)) {
        Tensor g = f.load(gate, dt == DType::f64 ? DType::f64 : DType::f32);
        KOFF_CHECK(g.dim() == 1 && g.size(0) == m.kv_keys.back().size(2), "{}: {} has shape {} for {} KV heads", dir,
                   gate, shape_str(g.shape()), m.kv_keys.back().size(2));
        m.kv_gates.resize(static_cast<size_t>(l));
        m.kv_gates.push_back(g.unsqueeze(0).contiguous().to(dev));
      }
    }
  }
  return m;
}

std::vector<nn::LayerHooks> LoadedMemory::hooks() const {
  std::vector<nn::LayerHooks> hooks(lora.size());
  const double s = config.alpha / static_cast<double>(config.rank);
  for (size_t l = 0; l < hooks.size(); ++l) {
    if (!kv_keys.empty() && kv_keys[l].size(2) > 0) {
      hooks[l].mem_k = ag::Variable(kv_keys[l]);
      hooks[l].mem_v = ag::Variable(kv_values[l]);
      if (l < kv_gates.size() && kv_gates[l].defined()) hooks[l].mem_gate = ag::Variable(kv_gates[l]);
    }
    if (!lora[l].empty()) {
      const auto* table = &lora[l];
      hooks[l].adapt = [table, s](Proj p, const ag::Variable& x, const ag::Variable& y) {
        auto it = table->find(p);
        if (it == table->end()) return y;
        // y + (x A^T) (s B)^T: the scale on the small B, not on the [.., out] product
        ag::Variable b = ag::Variable(ops::scale(it->second.second, s));
        return ag::add(y, ag::linear(ag::linear(x, ag::Variable(it->second.first)), b));
      };
    }
  }
  return hooks;
}

}  // namespace koff::offload
