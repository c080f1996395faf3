#include "engine/nn/pretrain.h"

#include <chrono>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <unistd.h>

#include "engine/cpu/threads.h"
#include "engine/data/corpus.h"
#include "engine/io/atomic_file.h"
#include "engine/io/checkpoint_dir.h"
#include "engine/io/safetensors.h"
#include "engine/nn/evaluate.h"
#include "engine/nn/optim.h"
#include "engine/tensor/interrupt.h"
#include "tokenizer/trainer.h"

namespace koff::nn {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// j[key] into slot when present; a value of the wrong type is one line naming the key (`where` is
// "train" or "tokenizer") instead of the JSON library's message.
template <typename T>
void get_key(const json& j, const char* where, const char* key, T& slot) {
  if (!j.contains(key)) return;
  const json& v = j.at(key);
  const bool ok = std::is_same_v<T, std::string> ? v.is_string()
                  : std::is_floating_point_v<T>  ? v.is_number()
                  : std::is_unsigned_v<T>        ? v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0)
                                                 : v.is_number_integer();
  KOFF_CHECK(ok, "{}.{}: expected {}, got {}", where, key,
             std::is_same_v<T, std::string> ? "a string"
             : std::is_floating_point_v<T>  ? "a number"
             : std::is_unsigned_v<T>        ? "a non-negative integer"
                                            : "an integer",
             v.dump());
  slot = v.get<T>();
}

}  // namespace

PretrainSettings PretrainSettings::from_json(const json& j) {
  KOFF_CHECK(j.is_object(), "train: expected an object, got {}", j.dump());
  PretrainSettings s;
  auto get = [&](const char* key, auto& slot) { get_key(j, "train", key, slot); };
  get("steps", s.steps), get("batch", s.batch), get("seq", s.seq), get("warmup", s.warmup), get("lr", s.lr);
  get("min_lr", s.min_lr), get("weight_decay", s.weight_decay), get("beta1", s.beta1), get("beta2", s.beta2);
  get("grad_clip", s.grad_clip), get("seed", s.seed), get("log_every", s.log_every);
  get("checkpoint_every", s.checkpoint_every), get("eval_every", s.eval_every), get("eval_windows", s.eval_windows);
  for (auto [key, v] : {std::pair{"steps", s.steps}, {"batch", s.batch}, {"log_every", s.log_every},
                        {"checkpoint_every", s.checkpoint_every}})
    KOFF_CHECK(v > 0, "train.{} {}: must be positive", key, v);
  KOFF_CHECK(s.seq > 1, "train.seq {}: must be at least 2", s.seq);
  for (auto [key, v] : {std::pair{"warmup", s.warmup}, {"eval_every", s.eval_every}, {"eval_windows", s.eval_windows}})
    KOFF_CHECK(v >= 0, "train.{} {}: must be >= 0", key, v);
  KOFF_CHECK(std::isfinite(s.lr) && s.lr > 0, "train.lr {}: must be a finite number > 0", s.lr);
  KOFF_CHECK(std::isfinite(s.min_lr) && s.min_lr >= 0 && s.min_lr <= s.lr, "train.min_lr {}: must be in [0, lr = {}]",
             s.min_lr, s.lr);
  for (auto [key, v] : {std::pair{"weight_decay", s.weight_decay}, {"grad_clip", s.grad_clip}})
    KOFF_CHECK(std::isfinite(v) && v >= 0, "train.{} {}: must be a finite number >= 0", key, v);
  for (auto [key, v] : {std::pair{"beta1", s.beta1}, {"beta2", s.beta2}})
    KOFF_CHECK(std::isfinite(v) && v >= 0 && v < 1, "train.{} {}: must be in [0, 1)", key, v);
  return s;
}

json PretrainSettings::to_json() const {
  return {{"steps", steps}, {"batch", batch}, {"seq", seq}, {"warmup", warmup}, {"lr", lr}, {"min_lr", min_lr},
          {"weight_decay", weight_decay}, {"beta1", beta1}, {"beta2", beta2}, {"grad_clip", grad_clip},
          {"seed", seed}, {"log_every", log_every}, {"checkpoint_every", checkpoint_every},
          {"eval_every", eval_every}, {"eval_windows", eval_windows}};
}

TokenizerSettings TokenizerSettings::from_json(const json& j) {
  KOFF_CHECK(j.is_object(), "tokenizer: expected an object, got {}", j.dump());
  TokenizerSettings t;
  get_key(j, "tokenizer", "vocab_size", t.vocab_size);
  if (j.contains("special_tokens")) {
    const json& v = j.at("special_tokens");
    KOFF_CHECK(v.is_array() && std::all_of(v.begin(), v.end(), [](const json& e) { return e.is_string(); }),
               "tokenizer.special_tokens: expected a list of strings, got {}", v.dump());
    t.special_tokens = v.get<std::vector<std::string>>();
  }
  get_key(j, "tokenizer", "bos_token", t.bos_token);
  get_key(j, "tokenizer", "eos_token", t.eos_token);
  KOFF_CHECK(t.vocab_size >= 256 + static_cast<int64_t>(t.special_tokens.size()) && t.vocab_size <= (int64_t{1} << 24),
             "tokenizer.vocab_size {}: must be in [256 + {} special tokens, 2^24]", t.vocab_size,
             t.special_tokens.size());
  return t;
}

namespace {

// Linear warmup to lr, then cosine decay to min_lr at the last step.
double learning_rate(const PretrainSettings& s, int64_t step) {
  if (step < s.warmup) return s.lr * static_cast<double>(step + 1) / static_cast<double>(s.warmup);
  double progress = static_cast<double>(step - s.warmup) / static_cast<double>(std::max<int64_t>(s.steps - s.warmup, 1));
  return s.min_lr + 0.5 * (s.lr - s.min_lr) * (1 + std::cos(3.141592653589793 * std::min(progress, 1.0)));
}

// Scales all gradients so that their global L2 norm is at most max_norm; returns the norm before.
double clip_gradients(const std::vector<autograd::Variable>& params, double max_norm) {
  double sq = 0;
  for (const auto& p : params)
    if (p.grad().defined()) sq += ops::dot(p.grad(), p.grad()).item();
  const double norm = std::sqrt(sq);
  if (max_norm > 0 && norm > max_norm) {
    for (auto p : params)
      if (p.grad().defined()) p.mutable_grad() = ops::scale(p.grad(), max_norm / (norm + 1e-6));
  }
  return norm;
}

// Weights, AdamW state and the step, in a CheckpointDir.
void save_checkpoint(const io::CheckpointDir& ckpt, int64_t step, const Transformer& model, const AdamW& opt,
                     const json& state) {
  const fs::path tmp = ckpt.begin(step);
  io::NamedTensors weights;
  for (const auto& [name, v] : model.named_parameters()) weights.emplace_back(name, v.data());
  io::save_safetensors(tmp / "model.safetensors", weights);
  io::save_safetensors(tmp / "optimizer.safetensors", opt.state());
  io::write_file_atomic(tmp / "state.json", state.dump(2));
  ckpt.commit(step);
}

using Note = std::function<void(const std::string&)>;

// Every check before anything is written (README, "Errors, interrupts and resuming"): the domains'
// text, the model config against the settings, and whether f32 weights, gradients and the two AdamW
// moments fit in memory.
void validate(const PretrainJob& job, const std::vector<data::DomainFiles>& domains) {
  const PretrainSettings& s = job.train;
  for (const auto& d : domains) (void)data::read_paragraphs(d.train), (void)data::read_paragraphs(d.valid);
  json mj = job.model;  // the ids the tokenizer will give, as placeholders
  KOFF_CHECK(mj.is_object(), "model: expected an object of config.json fields, got {}", mj.dump());
  mj["vocab_size"] = job.tokenizer.vocab_size;
  mj["bos_token_id"] = 0;
  mj["eos_token_id"] = 1;
  const io::ModelConfig c = io::parse_config(mj, "pretrain config 'model'");
  KOFF_CHECK(s.seq <= c.max_position_embeddings, "train.seq {}: longer than the model's max_position_embeddings {}",
             s.seq, c.max_position_embeddings);
  // Refuse what cannot fit, before allocating it.
  const double h = double(c.hidden_size), f = double(c.intermediate_size), hd = double(c.head_dim);
  const double per_layer = h * hd * double(c.num_attention_heads) * 2 + h * hd * double(c.num_key_value_heads) * 2 +
                           3 * h * f + 2 * h;
  const double params = double(c.num_hidden_layers) * per_layer + double(c.vocab_size) * h * (c.tie_word_embeddings ? 1 : 2);
  const double need = 16 * params;
  const double have = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
  KOFF_CHECK(have <= 0 || need < have,
             "pretrain config 'model': about {:.3g} parameters need {:.3g} GB for f32 weights, gradients and AdamW "
             "state, more than this machine's {:.3g} GB of memory",
             params, need / 1e9, have / 1e9);
}

// What makes a run this run: the model, training and tokenizer settings.
json run_identity(const PretrainJob& job) {
  return {{"model", job.model}, {"train", job.train.to_json()},
          {"tokenizer", {{"vocab_size", job.tokenizer.vocab_size},
                         {"special_tokens", job.tokenizer.special_tokens},
                         {"bos", job.tokenizer.bos_token}, {"eos", job.tokenizer.eos_token}}}};
}

// Resume only what this run started (engine/koff/run_identity.h does the same for offload).
void check_resume_identity(const fs::path& out, const json& identity) {
  if (!fs::exists(out / "run.json")) return;
  json before;
  try {
    std::ifstream in(out / "run.json");
    before = json::parse(in);
  } catch (const std::exception&) {
    fail("{}: not valid JSON; use another --out", (out / "run.json").string());
  }
  // run.json of an older koff has no "identity": compare its training settings.
  const json then = before.contains("identity") ? before.at("identity") : json{{"train", before.value("train", json())}};
  for (const auto& [key, v] : then.items())
    KOFF_CHECK(v == identity.value(key, json()),
               "{} holds another run: its \"{}\" settings differ from this config's; use another --out", out.string(),
               key);
}

// 1. Tokenizer: trained once on every domain's train split, then reused on resume.
Tokenizer load_or_train_tokenizer(const PretrainJob& job, const std::vector<data::DomainFiles>& domains,
                                  const fs::path& tok_path, const Note& note) {
  if (!fs::exists(tok_path)) {
    note(fmt::format("training a {}-token byte-level BPE on {} domains", job.tokenizer.vocab_size, domains.size()));
    BpeTrainerOptions o;
    o.vocab_size = static_cast<size_t>(job.tokenizer.vocab_size);
    o.special_tokens = job.tokenizer.special_tokens;
    o.bos_token = job.tokenizer.bos_token;
    BpeTrainer trainer(o);
    for (const auto& d : domains) trainer.add_file(d.train);
    trainer.train_to_file(tok_path.string());
  }
  return Tokenizer::from_file(tok_path.string());
}

// 2. Data: one mixed training stream, one valid stream per domain.
struct PretrainData {
  std::vector<int32_t> train;
  std::vector<std::pair<std::string, std::vector<int32_t>>> valid;
};
PretrainData tokenize_domains(const Tokenizer& tokenizer, const std::vector<data::DomainFiles>& domains, int64_t eos,
                              const Note& note) {
  PretrainData streams;
  for (const auto& d : domains) {
    auto t = data::tokenize(tokenizer, data::read_paragraphs(d.train), eos);
    streams.train.insert(streams.train.end(), t.begin(), t.end());
    streams.valid.emplace_back(d.name, data::tokenize(tokenizer, data::read_paragraphs(d.valid), eos));
  }
  note(fmt::format("{} training tokens; valid tokens per domain: {}", streams.train.size(), [&] {
    std::string s2;
    for (const auto& [n, v] : streams.valid) s2 += fmt::format("{}{}={}", s2.empty() ? "" : ", ", n, v.size());
    return s2;
  }()));
  return streams;
}

// 4. Resume: the newest readable checkpoint's weights, AdamW state and step (a corrupt newest one
// falls back to the previous); metrics after it belong to the interrupted run and are dropped.
// Returns the step to continue from (0 without a checkpoint).
int64_t resume(const io::CheckpointDir& ckpt, const fs::path& out, Transformer& model, AdamW& opt, const Note& note) {
  int64_t step = 0;
  const auto candidates = ckpt.newest_first();
  std::optional<fs::path> resumed_from;
  for (const fs::path& dir : candidates) {
    try {
      io::SafetensorsFile weights((dir / "model.safetensors").string());
      for (auto& [name, v] : model.named_parameters()) const_cast<autograd::Variable&>(v).mutable_data().copy_(weights.load(name, DType::f32));
      io::SafetensorsFile state((dir / "optimizer.safetensors").string());
      std::ifstream sj(dir / "state.json");
      KOFF_CHECK(sj.good(), "no state.json");
      json st = json::parse(sj);
      step = st.at("step");
      opt.load_state([&](const std::string& n) { return state.load(n, DType::f32); }, st.at("optimizer_steps"));
      resumed_from = dir;
      break;
    } catch (const Interrupted&) {
      throw;
    } catch (const std::exception& e) {
      note(fmt::format("warning: skipping checkpoint {}: {}", dir.string(), e.what()));
    }
  }
  KOFF_CHECK(candidates.empty() || resumed_from, "no checkpoint in {} is readable (see the warnings above)",
             (out / "ckpt").string());
  if (resumed_from) {
    const fs::path* dir = &*resumed_from;
    note(fmt::format("resumed from {} (step {})", dir->string(), step));
    fs::path mpath = out / "metrics.jsonl";
    if (fs::exists(mpath)) {
      std::ifstream in(mpath);
      std::string line, kept;
      while (std::getline(in, line))
        if (!line.empty() && json::parse(line).value("step", int64_t(0)) <= step) kept += line + "\n";
      io::write_file_atomic(mpath.string(), kept);
    }
  }
  return step;
}

// One optimizer step on the batch of `step` (windows drawn from (seed, step)): the loss, the
// gradient norm before clipping and the learning rate it used.
struct StepResult {
  double loss, grad_norm, lr;
};
StepResult train_step(Transformer& model, const std::vector<autograd::Variable>& params, AdamW& opt,
                      const PretrainSettings& s, const std::vector<int32_t>& train_stream, const Philox& data_rng,
                      int64_t step) {
  data::Batch b = data::sample_batch(train_stream, s.batch, s.seq, data_rng, static_cast<uint64_t>(step * s.batch));
  autograd::Variable loss = model.loss(b.ids, b.targets);
  const double loss_value = loss.data().item();
  KOFF_CHECK(std::isfinite(loss_value), "loss is {} at step {}: stopping; the last good checkpoint is kept",
             loss_value, step);
  loss.backward();
  const double gnorm = clip_gradients(params, s.grad_clip);
  const double lr = learning_rate(s, step);
  opt.step({lr / s.lr, lr / s.lr});
  opt.zero_grad();
  return {loss_value, gnorm, lr};
}

// The periodic evaluation: `windows` windows of each domain's valid stream, into metrics.jsonl and a note.
void evaluate_and_log(const Transformer& model, const std::vector<std::pair<std::string, std::vector<int32_t>>>& valid,
                      int64_t seq, int64_t windows, int64_t step, std::ofstream& metrics, const Note& note) {
  std::string line = fmt::format("eval at step {}:", step);
  json m = {{"step", step}};
  for (const auto& [name, stream] : valid) {
    const double ppl = perplexity(model, stream, seq, windows).ppl();
    line += fmt::format(" {}={:.2f}", name, ppl);
    m["valid_ppl_" + name] = ppl;
  }
  metrics << m.dump() << "\n";
  metrics.flush();
  note(line);
}

// 5. Export the final model (bf16, with the tokenizer), and its full held-out perplexity per domain.
std::vector<std::pair<std::string, double>> export_final(const fs::path& out, const Transformer& model,
                                                         const fs::path& tok_path, const PretrainData& streams,
                                                         int64_t seq, int64_t step, std::ofstream& metrics,
                                                         const Note& note) {
  const fs::path model_dir = out / "model";
  fs::create_directories(model_dir);
  model.save(model_dir.string(), DType::bf16);
  fs::copy_file(tok_path, model_dir / "tokenizer.json", fs::copy_options::overwrite_existing);
  Transformer exported = Transformer::load(model_dir.string(), DType::f32);
  std::vector<std::pair<std::string, double>> result;
  json m = {{"step", step}, {"final", true}};
  for (const auto& [name, stream] : streams.valid) {
    double ppl = perplexity(exported, stream, seq).ppl();
    result.emplace_back(name, ppl);
    m["valid_ppl_" + name] = ppl;
  }
  metrics << m.dump() << "\n";
  note(fmt::format("exported {} (bf16)", model_dir.string()));
  return result;
}

}  // namespace

std::vector<std::pair<std::string, double>> pretrain(const PretrainJob& job) {
  const PretrainSettings& s = job.train;
  const Note note = [&](const std::string& m) {
    if (job.progress) job.progress({0, s.steps, 0, 0, 0, 0, 0, m});
  };
  const fs::path out(job.out_dir);
  const auto domains = data::list_domains(job.data_dir);
  validate(job, domains);  // nothing is written, no tokenizer trained, on bad input
  const json identity = run_identity(job);
  check_resume_identity(out, identity);
  fs::create_directories(out / "ckpt");
  io::remove_orphaned_temporaries(out);
  io::CheckpointDir(out / "ckpt").remove_unfinished();

  const fs::path tok_path = out / "tokenizer.json";
  Tokenizer tokenizer = load_or_train_tokenizer(job, domains, tok_path, note);
  auto id_of = [&](const std::string& t) -> int64_t {
    auto id = tokenizer.token_to_id(t);
    KOFF_CHECK(id.has_value(), "{}: special token '{}' is not in the vocabulary", tok_path.string(), t);
    return *id;
  };
  const int64_t bos = id_of(job.tokenizer.bos_token), eos = id_of(job.tokenizer.eos_token);
  const PretrainData streams = tokenize_domains(tokenizer, domains, eos, note);

  // 3. Model.
  json mj = job.model;
  mj["vocab_size"] = tokenizer.vocab_size();
  mj["bos_token_id"] = bos;
  mj["eos_token_id"] = eos;
  io::ModelConfig config = io::parse_config(mj, "pretrain config 'model'");
  Transformer model(config, DType::f32);
  model.init_random(s.seed);
  model.set_requires_grad(true);
  std::vector<autograd::Variable> decay, no_decay, all;
  for (const auto& [name, v] : model.named_parameters()) {
    (v.data().dim() >= 2 ? decay : no_decay).push_back(v);
    all.push_back(v);
  }
  AdamW opt;
  opt.add_group("decay", decay, {s.lr, s.beta1, s.beta2, 1e-8, s.weight_decay});
  opt.add_group("no_decay", no_decay, {s.lr, s.beta1, s.beta2, 1e-8, 0.0});

  // 4. Resume.
  const io::CheckpointDir ckpt(out / "ckpt");
  int64_t step = resume(ckpt, out, model, opt, note);
  json run = {{"model", mj}, {"train", s.to_json()}, {"data", job.data_dir},
              {"tokenizer", {{"vocab_size", job.tokenizer.vocab_size}, {"bos", job.tokenizer.bos_token}, {"eos", job.tokenizer.eos_token}}},
              {"parameters", model.num_parameters()}, {"identity", identity}};
  io::write_file_atomic((out / "run.json").string(), run.dump(2));
  note(fmt::format("model: {} parameters ({} layers, d={}, {} heads / {} KV heads, ff={})", model.num_parameters(),
                   config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
                   config.num_key_value_heads, config.intermediate_size));

  std::ofstream metrics(out / "metrics.jsonl", std::ios::app);
  const Philox data_rng(s.seed, /*stream=*/0xDA7A);
  const int64_t first_step = step;
  auto t0 = std::chrono::steady_clock::now();
  auto save = [&] {
    save_checkpoint(ckpt, step, model, opt, {{"step", step}, {"optimizer_steps", opt.step_count()}});
    note(fmt::format("checkpoint: step {}", step));
  };

  // The OpenMP threads of each step, lowered while other processes hold cores (engine/cpu/threads.h).
  std::string fixed_why;
  cpu::ThreadGovernor governor = cpu::ThreadGovernor::for_training(job.adaptive_threads, &fixed_why);
  if (!fixed_why.empty()) note(fixed_why);
  while (step < s.steps) {
    const StepResult r = cpu::run_governed_step(
        governor, [&] { return train_step(model, all, opt, s, streams.train, data_rng, step); }, note);
    const double loss_value = r.loss, gnorm = r.grad_norm, lr = r.lr;
    ++step;

    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double tps = static_cast<double>((step - first_step) * s.batch * s.seq) / std::max(secs, 1e-9);
    if (step % s.log_every == 0 || step == s.steps) {
      metrics << json{{"step", step}, {"loss", loss_value}, {"lr", lr}, {"grad_norm", gnorm}, {"tokens_per_s", tps}}.dump()
              << "\n";
      metrics.flush();
    }
    if (job.progress) job.progress({step, s.steps, loss_value, lr, tps, gnorm, secs, ""});
    const bool interrupted = job.interrupt && job.interrupt->load();
    const bool stop = interrupted || (job.stop_after > 0 && step - first_step >= job.stop_after);
    if (step % s.checkpoint_every == 0 || step == s.steps || stop) {
      const NoInterruptScope finish_it;  // a checkpoint once begun is completed
      save();
    }
    if (s.eval_every > 0 && step % s.eval_every == 0 && step < s.steps)
      evaluate_and_log(model, streams.valid, s.seq, s.eval_windows, step, metrics, note);
    if (stop) {
      note(interrupted ? "interrupted: checkpoint saved; run the same command again to resume"
                       : fmt::format("stopped after {} steps of this run; run again to resume", step - first_step));
      return {};
    }
  }

  return export_final(out, model, tok_path, streams, s.seq, step, metrics, note);
}

}  // namespace koff::nn
