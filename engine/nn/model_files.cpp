#include "engine/nn/model_files.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/io/gguf.h"

namespace koff::nn {

namespace fs = std::filesystem;

bool is_gguf_model(const std::string& model) { return io::is_gguf(model); }

io::ModelConfig model_config(const std::string& model) {
  if (is_gguf_model(model)) return io::gguf_model_config(io::GgufFile(model));
  return io::load_config(fs::path(model) / "config.json");
}

std::string tokenizer_json_text(const std::string& model) {
  if (is_gguf_model(model)) return io::gguf_tokenizer_json(io::GgufFile(model)).dump();
  const fs::path path = fs::path(model) / "tokenizer.json";
  KOFF_CHECK(fs::exists(path), "{}: no tokenizer.json in the model directory", model);
  std::ifstream in(path, std::ios::binary);
  KOFF_CHECK(in.good(), "{}: cannot read", path.string());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

Tokenizer load_tokenizer(const std::string& model) {
  if (is_gguf_model(model)) return Tokenizer::from_json(tokenizer_json_text(model), model + " (tokenizer.ggml.*)");
  return Tokenizer::from_file((fs::path(model) / "tokenizer.json").string());
}

void check_model_files(const std::string& model) {
  KOFF_CHECK(fs::exists(model), "model {} does not exist", model);
  if (is_gguf_model(model)) {
    io::GgufFile f(model);
    (void)io::gguf_model_config(f);
    (void)io::gguf_tokenizer_json(f);
    return;
  }
  KOFF_CHECK(fs::is_directory(model), "{}: neither a model directory nor a GGUF file", model);
  KOFF_CHECK(fs::exists(fs::path(model) / "tokenizer.json"), "{}: no tokenizer.json", model);
  (void)io::load_config(fs::path(model) / "config.json");
}

}  // namespace koff::nn
