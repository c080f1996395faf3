// Pretraining a small base model from scratch (`koff pretrain`): the embedded default model.
//
// Batches are random windows drawn by a counter-based RNG keyed by (seed, step), so the data
// position is a function of the step: a checkpoint holds weights, AdamW state and the step, and a
// resumed run reproduces an uninterrupted one bit for bit. Checkpoints go to <out>/ckpt/step-N/
// (written to a temporary folder, then renamed); <out>/ckpt/latest names the newest.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/io/model_config.h"

namespace koff::nn {

struct PretrainSettings {
  int64_t steps = 1000, batch = 16, seq = 256, warmup = 100;
  double lr = 3e-3, min_lr = 3e-4, weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95, grad_clip = 1.0;
  uint64_t seed = 1;
  int64_t log_every = 10, checkpoint_every = 100, eval_every = 500, eval_windows = 16;
  static PretrainSettings from_json(const nlohmann::json& j);
  nlohmann::json to_json() const;
};

struct TokenizerSettings {
  int64_t vocab_size = 8192;
  std::vector<std::string> special_tokens = {"<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"};
  std::string bos_token = "<|begin_of_text|>", eos_token = "<|end_of_text|>";
  static TokenizerSettings from_json(const nlohmann::json& j);
};

struct PretrainReport {  // what the progress callback sees
  int64_t step = 0, steps = 0;
  double loss = 0, lr = 0, tokens_per_second = 0, grad_norm = 0, elapsed = 0;
  std::string message;  // non-empty for notes (checkpoint, eval, resume)
};

struct PretrainJob {
  nlohmann::json model;  // config.json fields of the model (vocab_size is set from the tokenizer)
  TokenizerSettings tokenizer;
  PretrainSettings train;
  std::string data_dir, out_dir;
  int64_t stop_after = 0;  // stop (with a checkpoint) after this many steps of this run; 0 = no limit
  // Fewer OpenMP threads while other processes hold the cores (engine/cpu/threads.h); false
  // (--fixed-threads): the starting count for every step.
  bool adaptive_threads = true;
  const std::atomic<bool>* interrupt = nullptr;  // set by a signal handler: checkpoint and stop
  std::function<void(const PretrainReport&)> progress;
};

// Runs (or resumes) the job. Writes <out>/tokenizer.json (trained on the train splits unless present),
// <out>/run.json, <out>/metrics.jsonl, checkpoints, and at the end <out>/model/ (config.json,
// model.safetensors in bf16, tokenizer.json). Returns the per-domain valid perplexity of the final model.
std::vector<std::pair<std::string, double>> pretrain(const PretrainJob& job);

}  // namespace koff::nn
