// Model commands: `koff logits`, `koff eval`, `koff generate` on a Hugging Face model directory
// (config.json + safetensors + tokenizer.json) or a GGUF file.
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "engine/data/corpus.h"
#include "engine/io/npy.h"
#include "engine/koff/export.h"
#include "engine/nn/evaluate.h"
#include "engine/nn/generate.h"
#include "engine/nn/model_files.h"
#include "tokenizer/tokenizer.h"
#include "tools/cli.h"
#include "tools/progress.h"

namespace {

namespace fs = std::filesystem;

using koff::nn::load_tokenizer;  // tokenizer.json, or the one a GGUF file's metadata describes

std::vector<int64_t> parse_ids(const std::string& text) {
  std::vector<int64_t> ids;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find(',', pos);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(pos, end - pos);
    try {
      size_t used = 0;
      ids.push_back(std::stoll(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw koff::Error(fmt::format("--ids: '{}' is not an integer (expected e.g. 1,2,3)", item));
    }
    pos = end + 1;
  }
  if (ids.empty()) throw koff::Error("--ids: no ids given");
  return ids;
}

const bool logits_registered = koff::cli::add_command({"logits", "float32 logits [T, vocab] of one sequence to .npy",
    [](CLI::App& sub) {
      auto model = std::make_shared<std::string>(), ids = std::make_shared<std::string>(),
           out = std::make_shared<std::string>();
      sub.add_option("--model", *model, "model directory or GGUF file")->required();
      sub.add_option("--ids", *ids, "comma-separated token ids, e.g. 1,2,3")->required();
      sub.add_option("--out", *out, "output .npy file")->required();
      return [=]() {
        auto tokens = parse_ids(*ids);
        const int64_t context = koff::nn::model_config(*model).max_position_embeddings;
        KOFF_CHECK(static_cast<int64_t>(tokens.size()) <= context,
                   "--ids: {} ids, more than the context of {} tokens of {} (max_position_embeddings)", tokens.size(),
                   context, *model);
        auto m = koff::nn::Transformer::load(*model, koff::DType::f32);
        for (int64_t t : tokens)
          if (t < 0 || t >= m.config().vocab_size)
            throw koff::Error(fmt::format("--ids: id {} outside the vocabulary [0, {})", t, m.config().vocab_size));
        koff::autograd::NoGradGuard no_grad;
        koff::Tensor ids_t = koff::Tensor::from_vector(tokens, {1, static_cast<int64_t>(tokens.size())});
        koff::Tensor logits = m.logits(ids_t).data().select(0, 0).contiguous();
        koff::io::save_npy(*out, logits);
        fmt::print("wrote {} logits {} to {}\n", koff::dtype_name(logits.dtype()), koff::shape_str(logits.shape()), *out);
        return 0;
      };
    }});

const bool eval_registered = koff::cli::add_command({"eval", "held-out perplexity of a model on text",
    [](CLI::App& sub) {
      struct Options {
        std::string model, data, memory;
        int64_t seq = 256, max_windows = 0;
        koff::cli::DeviceOptions device;
      };
      auto o = std::make_shared<Options>();
      sub.add_option("--model", o->model, "model directory or GGUF file")->required();
      sub.add_option("--memory", o->memory, "a domain memory exported by koff offload (memories/<domain>)");
      sub.add_option("--data", o->data,
                     "a text file (paragraphs separated by blank lines), or a data directory: every <domain>/valid.txt")
          ->required();
      sub.add_option("--seq", o->seq, "window length in tokens")->capture_default_str();
      sub.add_option("--max-windows", o->max_windows, "evaluate at most this many windows per file (0 = all)");
      koff::cli::add_device_options(sub, o->device);
      return [o]() {
        const koff::DType dtype = o->device.resolved_dtype();
        const koff::Device device = o->device.resolved_device();
        koff::nn::check_model_files(o->model);
        const int64_t context = koff::nn::model_config(o->model).max_position_embeddings;
        KOFF_CHECK(o->seq >= 1 && o->seq <= context,
                   "--seq {}: must be in [1, {}], the context of {} (max_position_embeddings)", o->seq, context, o->model);
        KOFF_CHECK(o->max_windows >= 0, "--max-windows {}: must be >= 0 (0 = all)", o->max_windows);
        auto model = koff::nn::Transformer::load(o->model, dtype);
        model.to(device);
        auto tok = load_tokenizer(o->model);
        std::vector<koff::nn::LayerHooks> hooks;
        koff::offload::LoadedMemory memory;
        if (!o->memory.empty()) {
          memory = koff::offload::load_memory(o->memory, model);
          hooks = memory.hooks();
        }
        const auto& eos_ids = model.config().eos_token_ids;
        const int64_t eos = eos_ids.empty() ? -1 : eos_ids.front();
        std::vector<std::pair<std::string, std::string>> files;
        if (fs::is_directory(o->data)) {
          for (const auto& d : koff::data::list_domains(o->data)) files.emplace_back(d.name, d.valid);
        } else {
          files.emplace_back(fs::path(o->data).stem().string(), o->data);
        }
        fmt::print("{:<12} {:>10} {:>10}\n", "domain", "tokens", "ppl");
        for (const auto& [name, path] : files) {
          auto stream = koff::data::tokenize(tok, koff::data::read_paragraphs(path), eos);
          auto p = koff::nn::perplexity(model, stream, o->seq, o->max_windows, hooks.empty() ? nullptr : &hooks);
          fmt::print("{:<12} {:>10} {:>10.3f}\n", name, p.tokens, p.ppl());
          std::fflush(stdout);
        }
        return 0;
      };
    }});

const bool generate_registered = koff::cli::add_command({"generate", "generate text with a KV cache (streams tokens)",
    [](CLI::App& sub) {
      struct Options {
        std::string model, prompt, memory;
        int64_t max_new_tokens = 64;
        double temperature = 0, top_p = 1.0;
        uint64_t seed = 0;
        koff::cli::DeviceOptions device;
      };
      auto o = std::make_shared<Options>();
      sub.add_option("--model", o->model, "model directory or GGUF file")->required();
      sub.add_option("--prompt", o->prompt, "prompt text")->required();
      sub.add_option("--memory", o->memory, "a domain memory exported by koff offload (memories/<domain>)");
      sub.add_option("-n,--max-new-tokens", o->max_new_tokens, "tokens to generate")->capture_default_str();
      sub.add_option("--temperature", o->temperature, "0 = greedy")->capture_default_str();
      sub.add_option("--top-p", o->top_p, "nucleus sampling mass, in (0, 1]")->capture_default_str();
      sub.add_option("--seed", o->seed, "sampling seed")->capture_default_str();
      koff::cli::add_device_options(sub, o->device);
      return [o]() {
        KOFF_CHECK(o->max_new_tokens >= 1, "--max-new-tokens {}: must be at least 1", o->max_new_tokens);
        KOFF_CHECK(std::isfinite(o->temperature) && o->temperature >= 0,
                   "--temperature {}: must be a finite number >= 0 (0 = greedy)", o->temperature);
        KOFF_CHECK(std::isfinite(o->top_p) && o->top_p > 0 && o->top_p <= 1, "--top-p {}: must be in (0, 1]",
                   o->top_p);
        const koff::DType dtype = o->device.resolved_dtype();
        const koff::Device device = o->device.resolved_device();
        koff::nn::check_model_files(o->model);
        auto tok = load_tokenizer(o->model);
        std::vector<int64_t> prompt;
        for (uint32_t id : tok.encode(o->prompt, true)) prompt.push_back(id);
        const int64_t context = koff::nn::model_config(o->model).max_position_embeddings;
        KOFF_CHECK(static_cast<int64_t>(prompt.size()) + o->max_new_tokens <= context,
                   "--max-new-tokens {}: the prompt's {} tokens + {} exceed the context of {} tokens of {} "
                   "(max_position_embeddings)",
                   o->max_new_tokens, prompt.size(), o->max_new_tokens, context, o->model);
        auto model = koff::nn::Transformer::load(o->model, dtype);
        model.to(device);
        koff::nn::GenerateOptions g;
        g.max_new_tokens = o->max_new_tokens;
        g.temperature = o->temperature;
        g.top_p = o->top_p;
        g.seed = o->seed;
        std::vector<koff::nn::LayerHooks> hooks;
        koff::offload::LoadedMemory memory;
        if (!o->memory.empty()) {
          memory = koff::offload::load_memory(o->memory, model);
          hooks = memory.hooks();
          g.hooks = &hooks;
        }
        g.stop_ids = model.config().eos_token_ids;
        // Stream: decode the whole continuation each time and print what is new, so multi-token
        // characters appear once complete.
        std::vector<uint32_t> produced;
        std::string shown;
        fmt::print("{}", o->prompt);
        std::fflush(stdout);
        koff::nn::generate(model, prompt, g, [&](int64_t id) {
          produced.push_back(static_cast<uint32_t>(id));
          std::string text = tok.decode(produced, true);
          if (text.size() > shown.size() && text.compare(0, shown.size(), shown) == 0 &&
              text.find("\xEF\xBF\xBD", shown.size()) == std::string::npos) {
            fmt::print("{}", text.substr(shown.size()));
            std::fflush(stdout);
            shown = text;
          }
          return true;
        });
        std::string text = tok.decode(produced, true);
        if (text.size() > shown.size()) fmt::print("{}", text.substr(shown.size()));
        fmt::print("\n");
        return 0;
      };
    }});

}  // namespace
