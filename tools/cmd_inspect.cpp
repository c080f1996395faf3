// `koff inspect FILE_OR_DIR`: the tensors of a safetensors file, model directory or GGUF file (name,
// dtype, shape, size) and, for a model, a summary of its config (config.json or GGUF metadata);
// for a GGUF file also its metadata keys.
#include <filesystem>

#include "engine/io/gguf.h"
#include "engine/io/model_config.h"
#include "engine/io/safetensors.h"
#include "tools/cli.h"

namespace {

namespace fs = std::filesystem;

std::string human_bytes(double b) {
  const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (b >= 1024 && i < 4) b /= 1024, ++i;
  return i ? fmt::format("{:.1f} {}", b, unit[i]) : fmt::format("{:.0f} {}", b, unit[i]);
}

void print_config(const koff::io::ModelConfig& c) {
  fmt::print("model_type {} | layers {} | hidden {} | heads {} (KV {}) | head_dim {} | ff {} | vocab {}\n",
             c.model_type, c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads,
             c.head_dim, c.intermediate_size, c.vocab_size);
  fmt::print("rope_theta {} | rope scaling {} | tied embeddings {} | qkv bias {} | qk norm {}\n", c.rope_theta,
             c.has_rope_scaling() ? fmt::format("llama3 x{}", c.rope_scaling.factor) : std::string("none"),
             c.tie_word_embeddings, c.has_qkv_bias(), c.has_qk_norm());
  if (c.is_pruned()) {
    fmt::print("pruned backbone (koff):");
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      auto w = c.layer(i);
      fmt::print(" L{}:{}h/{}kv/{}ff", i, w.num_attention_heads(), w.num_key_value_heads(), w.intermediate_size);
    }
    fmt::print("\n");
    if (c.koff.contains("target_sparsity"))
      fmt::print("target sparsity {} | achieved {}\n", c.koff["target_sparsity"].dump(),
                 c.koff.value("achieved_sparsity", nlohmann::json()).dump());
  }
}

const bool registered = koff::cli::add_command({"inspect", "tensors, shapes, dtypes, sizes; config summary",
    [](CLI::App& sub) {
      auto path = std::make_shared<std::string>();
      sub.add_option("path", *path, "a .safetensors file, a model directory or a .gguf file")->required();
      return [path]() {
        std::vector<std::pair<std::string, koff::io::TensorInfo>> rows;
        if (fs::is_directory(*path)) {
          if (fs::exists(fs::path(*path) / "config.json")) print_config(koff::io::load_config(fs::path(*path) / "config.json"));
          koff::io::Checkpoint ckpt(*path);
          for (const auto& name : ckpt.names()) {
            koff::Tensor t = ckpt.tensor(name);
            koff::io::TensorInfo info;
            info.dtype_name = koff::dtype_name(t.dtype());
            info.shape = t.shape();
            info.end = t.nbytes();
            rows.emplace_back(name, info);
          }
        } else if (koff::io::is_gguf(*path)) {
          koff::io::GgufFile f(*path);
          fmt::print("GGUF v{} | {} metadata keys | {} tensors | alignment {}\n", f.version(), f.keys().size(),
                     f.tensors().size(), f.alignment());
          for (const auto& k : f.keys()) fmt::print("metadata {} = {}\n", k, f.get(k).to_string());
          if (f.has("general.architecture")) print_config(koff::io::gguf_model_config(f));
          for (const auto& t : f.tensors()) {
            koff::io::TensorInfo info;
            info.dtype_name = koff::io::ggml_type(t.type)->name;
            info.shape = t.shape();
            info.end = t.nbytes;
            rows.emplace_back(t.name, info);
          }
        } else {
          koff::io::SafetensorsFile f(*path);
          for (const auto& name : f.names()) rows.emplace_back(name, f.info(name));
          for (const auto& [k, v] : f.metadata()) fmt::print("metadata {} = {}\n", k, v);
        }
        uint64_t total_bytes = 0;
        int64_t total_elements = 0;
        size_t width = 4;
        for (const auto& r : rows) width = std::max(width, r.first.size());
        fmt::print("{:<{}}  {:<5}  {:<18}  {:>10}\n", "name", width, "dtype", "shape", "size");
        for (const auto& [name, info] : rows) {
          fmt::print("{:<{}}  {:<5}  {:<18}  {:>10}\n", name, width, info.dtype_name, koff::shape_str(info.shape),
                     human_bytes(static_cast<double>(info.nbytes())));
          total_bytes += info.nbytes();
          total_elements += koff::shape_numel(info.shape);
        }
        fmt::print("{} tensors, {} elements, {}\n", rows.size(), total_elements, human_bytes(double(total_bytes)));
        return 0;
      };
    }});

}  // namespace
