// Where a model's files are. A model is either a Hugging Face directory (config.json, safetensors
// shards, tokenizer.json) or one GGUF file (llama.cpp's format: config, weights and tokenizer all in
// the file's metadata and tensors; see engine/io/gguf.h). Every command that takes --model accepts
// both; these functions hide the difference.
#pragma once

#include <string>

#include "engine/io/model_config.h"
#include "tokenizer/tokenizer.h"

namespace koff::nn {

bool is_gguf_model(const std::string& model);
// The model's config (config.json, or the GGUF metadata); errors name the path.
io::ModelConfig model_config(const std::string& model);
// The tokenizer.json text of the model (the file, or the one built from the GGUF metadata).
std::string tokenizer_json_text(const std::string& model);
Tokenizer load_tokenizer(const std::string& model);
// Checks that the model exists and has a tokenizer, without loading weights.
void check_model_files(const std::string& model);

}  // namespace koff::nn
