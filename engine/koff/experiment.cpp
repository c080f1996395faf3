#include "engine/koff/experiment.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>

#include "engine/cpu/runtime.h"
#include "engine/data/corpus.h"
#include "engine/io/atomic_file.h"
#include "engine/koff/export.h"
#include "engine/koff/run_identity.h"
#include "engine/nn/evaluate.h"
#include "engine/nn/model_files.h"
#include "engine/ops/dispatch.h"
#include "engine/ops/profile.h"

namespace koff::offload {

namespace ag = autograd;
namespace fs = std::filesystem;
using nlohmann::json;

std::string variant_name(const OffloadSettings& s) {
  const MemoryConfig& m = s.memory;
  if (!s.learn_mask) return m.lora && m.kv ? "dense+LoRA+KV" : m.lora ? "dense+LoRA" : "dense+KV";
  if (m.lora && m.kv) return "KOFF";
  if (m.lora) return "KOFF-LoRA";
  if (m.kv) return "KOFF-KV";
  return "prune-only";
}

void validate(const OffloadJob& job) {
  const OffloadSettings& s = job.settings;
  // One line naming the option, the value and the limit (README, "Errors, interrupts and resuming").
  auto positive = [](const char* flag, int64_t v) { KOFF_CHECK(v > 0, "{} {}: must be a positive count", flag, v); };
  auto rate = [](const char* flag, double v, bool zero_ok) {
    KOFF_CHECK(std::isfinite(v) && (zero_ok ? v >= 0 : v > 0), "{} {}: must be a finite number {} 0", flag, v,
               zero_ok ? ">=" : ">");
  };
  auto fraction = [](const char* flag, double v) {
    KOFF_CHECK(std::isfinite(v) && v >= 0 && v <= 1, "{} {}: must be a fraction in [0, 1]", flag, v);
  };
  KOFF_CHECK(std::isfinite(s.target) && s.target >= 0 && s.target < 1, "--target {}: must be in [0, 1)", s.target);
  positive("--steps", s.steps);
  positive("--batch", s.batch);
  positive("--accum", s.accum);
  KOFF_CHECK(s.seq > 1, "--seq {}: must be at least 2 tokens", s.seq);
  positive("--checkpoint-every", s.checkpoint_every);
  positive("log_every", s.log_every);
  KOFF_CHECK(s.recovery_steps >= 0, "--recovery-steps {}: must be >= 0", s.recovery_steps);
  fraction("--warmup-frac", s.warmup_frac);
  fraction("memory_warmup_frac", s.memory_warmup_frac);
  rate("--lr-gates", s.lr_gates, false);
  rate("--lr-lambda", s.lr_lambda, true);
  rate("--lr-memory", s.lr_memory, false);
  KOFF_CHECK(std::isfinite(s.init_log_alpha), "init_log_alpha {}: must be finite", s.init_log_alpha);
  rate("--kd", s.kd, true);
  if (s.memory.lora) {
    positive("--lora-rank", s.memory.rank);
    rate("--alpha", s.memory.alpha, false);
  }
  if (s.memory.kv) positive("--slots", s.memory.slots);
  KOFF_CHECK(s.memory.kv_init == "text" || s.memory.kv_init == "random" || s.memory.kv_init == "neutral",
             "--kv-init '{}': must be text, random or neutral", s.memory.kv_init);
  rate("--lr-memory-gate", s.lr_memory_gate, false);
  (void)sparsity_control_from_name(s.sparsity_control);
  KOFF_CHECK(s.learn_mask || (s.target == 0 && s.has_memory()),
             "--no-mask learns memories on the dense model: it needs --target 0 and LoRA or KV memories");
  rate("--penalty", s.penalty, true);
  rate("--decide", s.decide, true);
  KOFF_CHECK(job.cross_tokens >= 0, "--cross-tokens {}: must be >= 0 (0 = the whole valid split)", job.cross_tokens);
  KOFF_CHECK(job.eval_tokens >= 0, "--eval-tokens {}: must be >= 0 (0 = the whole valid split)", job.eval_tokens);
  KOFF_CHECK(job.eval_seq > 1, "evaluation window {}: must be at least 2 tokens", job.eval_seq);
  KOFF_CHECK(job.save_dtype == "f32" || job.save_dtype == "bf16", "--save-dtype '{}': must be f32 or bf16",
             job.save_dtype);
  KOFF_CHECK(std::isfinite(job.bucket_mb) && job.bucket_mb > 0, "--bucket-mb {}: must be positive", job.bucket_mb);
  KOFF_CHECK(job.dtype == DType::f32 || job.dtype == DType::bf16, "--dtype must be f32 or bf16");
  KOFF_CHECK(job.dtype == DType::f32 || !job.device.is_cpu(),
             "--dtype bf16 needs --device cuda: the CPU backend computes in f32 (the reference)");
  nn::check_model_files(job.model_dir);  // a model directory or a GGUF file
  const io::ModelConfig config = nn::model_config(job.model_dir);
  KOFF_CHECK(s.seq <= config.max_position_embeddings,
             "--seq {}: longer than the context of {} tokens of {} (max_position_embeddings)", s.seq,
             config.max_position_embeddings, job.model_dir);
  KOFF_CHECK(job.eval_seq <= config.max_position_embeddings,
             "evaluation window {}: longer than the context of {} tokens of {} (max_position_embeddings)", job.eval_seq,
             config.max_position_embeddings, job.model_dir);
  if (s.memory.lora)
    KOFF_CHECK(s.memory.rank <= config.hidden_size, "--lora-rank {}: larger than the model's hidden size {}",
               s.memory.rank, config.hidden_size);
  for (const auto& d : data::list_domains(job.data_dir)) {
    (void)data::read_paragraphs(d.train);
    (void)data::read_paragraphs(d.valid);
  }
}

namespace {

std::vector<int32_t> head(std::vector<int32_t> v, int64_t n) {
  if (n > 0 && static_cast<int64_t>(v.size()) > n + 1) v.resize(static_cast<size_t>(n + 1));
  return v;
}

double ppl(const nn::Transformer& m, const std::vector<int32_t>& stream, int64_t seq,
           const std::vector<nn::LayerHooks>* hooks = nullptr) {
  return nn::perplexity(m, stream, seq, 0, hooks).ppl();
}

// LAPE (section 9) on the dense model: p[l][i][k] = fraction of language k's tokens where
// silu(gate_proj x)_i > 0 (i.e. gate_proj x > 0); entropy of p normalised over languages.
json lape(const nn::Transformer& base, const std::vector<std::vector<int32_t>>& valid, int64_t seq, const FinalMask& mask) {
  const int64_t L = base.num_layers(), F = base.config().intermediate_size, K = static_cast<int64_t>(valid.size());
  std::vector<double> p(static_cast<size_t>(L * F * K), 0.0);
  ag::NoGradGuard no_grad;
  for (int64_t k = 0; k < K; ++k) {
    std::vector<int64_t> active(static_cast<size_t>(L * F), 0);
    int64_t tokens = 0;
    for (const data::Batch& b : data::eval_windows(valid[static_cast<size_t>(k)], seq)) {
      std::vector<nn::LayerHooks> hooks(static_cast<size_t>(L));
      for (int64_t l = 0; l < L; ++l)
        hooks[static_cast<size_t>(l)].adapt = [&, l](nn::Proj pr, const ag::Variable&, const ag::Variable& y) {
          if (pr == nn::Proj::gate) {
            Tensor g = y.data().reshape({-1, F}).to(Device::cpu()).to(DType::f32);
            const float* v = g.data<float>();
            for (int64_t r = 0; r < g.size(0); ++r)
              for (int64_t i = 0; i < F; ++i) active[static_cast<size_t>(l * F + i)] += v[r * F + i] > 0;
          }
          return y;
        };
      nn::ForwardOptions fo;
      fo.hooks = &hooks;
      (void)base.hidden(b.ids, fo);
      tokens += b.tokens;
    }
    for (int64_t j = 0; j < L * F; ++j) p[static_cast<size_t>(j * K + k)] = double(active[static_cast<size_t>(j)]) / std::max<int64_t>(tokens, 1);
  }
  // 95th percentile of all p; candidates exceed it for some language; the 5% of all neurons with the
  // lowest entropy among candidates are language-specific.
  std::vector<double> all = p;
  std::sort(all.begin(), all.end());
  const double p95 = all[static_cast<size_t>(0.95 * static_cast<double>(all.size() - 1))];
  std::vector<std::pair<double, int64_t>> candidates;
  for (int64_t j = 0; j < L * F; ++j) {
    double sum = 0, mx = 0;
    for (int64_t k = 0; k < K; ++k) sum += p[static_cast<size_t>(j * K + k)], mx = std::max(mx, p[static_cast<size_t>(j * K + k)]);
    if (mx <= p95 || sum <= 0) continue;
    double h = 0;
    for (int64_t k = 0; k < K; ++k) {
      const double q = p[static_cast<size_t>(j * K + k)] / sum;
      if (q > 0) h -= q * std::log(q);
    }
    candidates.emplace_back(h, j);
  }
  std::sort(candidates.begin(), candidates.end());
  const size_t n_specific = std::min(candidates.size(), static_cast<size_t>(0.05 * static_cast<double>(L * F)));
  std::vector<bool> specific(static_cast<size_t>(L * F), false);
  for (size_t c = 0; c < n_specific; ++c) specific[static_cast<size_t>(candidates[c].second)] = true;
  json layers = json::array();
  int64_t s_total = 0, s_removed = 0, o_total = 0, o_removed = 0;
  for (int64_t l = 0; l < L; ++l) {
    int64_t st = 0, sr = 0, ot = 0, orem = 0;
    for (int64_t i = 0; i < F; ++i) {
      const bool removed = !mask.keep_neurons[static_cast<size_t>(l)][static_cast<size_t>(i)];
      if (specific[static_cast<size_t>(l * F + i)]) ++st, sr += removed;
      else ++ot, orem += removed;
    }
    layers.push_back({{"specific", st}, {"specific_removed", sr}, {"other", ot}, {"other_removed", orem}});
    s_total += st, s_removed += sr, o_total += ot, o_removed += orem;
  }
  return {{"p95", p95}, {"specific", s_total}, {"specific_removed", s_removed}, {"other", o_total},
          {"other_removed", o_removed},
          {"specific_removed_fraction", s_total ? double(s_removed) / double(s_total) : 0.0},
          {"other_removed_fraction", o_total ? double(o_removed) / double(o_total) : 0.0}, {"layers", layers}};
}

using Note = std::function<void(const std::string&)>;

// The provenance a compacted backbone's config.json records.
json provenance(const OffloadJob& job) {
  const OffloadSettings& s = job.settings;
  return {{"source_model", fs::absolute(job.model_dir).string()}, {"target_sparsity", s.target},
          {"variant", variant_name(s)}, {"settings", s.to_json()}};
}

// The domains' token streams: train whole, valid cut to eval_tokens (every domain in the order of
// the data directory).
struct DomainStreams {
  std::vector<std::string> names;
  std::vector<std::vector<int32_t>> train, valid;
};
DomainStreams read_domains(const OffloadJob& job, const std::vector<data::DomainFiles>& domains, const Tokenizer& tok,
                           int64_t eos) {
  DomainStreams ds;
  for (const auto& d : domains) {
    ds.names.push_back(d.name);
    ds.train.push_back(data::tokenize(tok, data::read_paragraphs(d.train), eos));
    ds.valid.push_back(head(data::tokenize(tok, data::read_paragraphs(d.valid), eos), job.eval_tokens));
    KOFF_CHECK(static_cast<int64_t>(ds.train.back().size()) > job.settings.seq + 1,
               "{}: {} tokens, too few for one training window of --seq {} + 1", d.train, ds.train.back().size(),
               job.settings.seq);
    KOFF_CHECK(ds.valid.back().size() >= 2, "{}: {} tokens, too few to evaluate", d.valid, ds.valid.back().size());
  }
  return ds;
}

// Every check has passed: from here on the run directory is written (rank 0): --force-new clears
// it, temporaries of a dead process go, run.json records what this run is.
void start_run_directory(const OffloadJob& job, const std::vector<std::string>& names, const json& fingerprint,
                         bool root, const Note& note) {
  const OffloadSettings& s = job.settings;
  const fs::path out(job.out_dir);
  if (root && job.force_new) clear_run_directory(out);
  if (job.force_new && job.comm && job.comm->world_size() > 1) {
    uint64_t cleared = 1;  // no rank looks for checkpoints before rank 0 has removed them
    job.comm->broadcast(&cleared, sizeof cleared, 0);
  }
  if (root) fs::create_directories(out);
  if (root && io::remove_orphaned_temporaries(out) > 0)
    note(fmt::format("removed temporary files left in {} by a process that died", out.string()));
  json run = {{"model", fs::absolute(job.model_dir).string()}, {"data", fs::absolute(job.data_dir).string()},
              {"domains", names}, {"settings", s.to_json()}, {"variant", variant_name(s)},
              {"eval_tokens", job.eval_tokens}, {"eval_seq", job.eval_seq}, {"fingerprint", fingerprint}};
  if (root) io::write_file_atomic(out / "run.json", run.dump(2));
}

// What the run is about to do: variant, data parallelism, device.
void note_run(const OffloadJob& job, size_t domains, const Note& note) {
  const OffloadSettings& s = job.settings;
  note(fmt::format("{}: {} on {} domains, target {:.0f}%, {} steps of {} x {} tokens", job.out_dir, variant_name(s),
                   domains, 100 * s.target, s.steps, s.batch, s.seq));
  if (job.comm && job.comm->world_size() > 1) {
    const int64_t W = job.comm->world_size(), fewest = s.batch / W, most = (s.batch + W - 1) / W;
    note(fmt::format("data parallel over {} ranks ({}): {} of each step's {} sequences per rank, gradient buckets "
                     "of {:g} MiB{}",
                     W, job.comm->backend(), fewest == most ? fmt::format("{}", most) : fmt::format("{}-{}", fewest, most),
                     s.batch, job.bucket_mb,
                     job.grad_comm ? fmt::format(" reduced on {} by {}", job.grad_comm->device().str(),
                                                 job.grad_comm->backend())
                                   : ""));
  }

  if (!job.device.is_cpu())
    note(fmt::format("device {} ({}), frozen weights in {}, trainables and AdamW state in f32", job.device.str(),
                     backend_for(job.device).name, dtype_name(job.dtype)));
  else
    note(fmt::format("cpu: {}", cpu::runtime_summary()));
}

// --profile, after training: the step's per-op table against the ceilings, to profile.txt and as notes.
void write_profile(const OffloadJob& job, const OffloadTrainer& trainer, const profile::Ceilings& ceilings,
                   const Note& note) {
  const auto& sp = trainer.step_profile();
  std::string text = fmt::format("step {}: ", sp.step) +
                     profile::format_step_profile(sp.ops, sp.step_ms, sp.tokens, ceilings,
                                                  fmt::format("{} {}", job.device.str(), dtype_name(job.dtype)));
  // On the CPU the BLAS kernels and the OpenMP wait policy decide most of it: say which ran.
  // The runtime line's thread count is the current one; the governor may have run this step on another.
  if (job.device.is_cpu())
    text += fmt::format("  cpu runtime: {}\n  this step ran on {} OpenMP thread{}\n", cpu::runtime_summary(),
                        sp.threads, sp.threads == 1 ? "" : "s");
  io::write_file_atomic(fs::path(job.out_dir) / "profile.txt", text);
  for (size_t a = 0, b; a < text.size(); a = b + 1) {  // one note per line
    b = text.find('\n', a);
    if (b == std::string::npos) b = text.size();
    note(text.substr(a, b - a));
  }
}

// What the run exports: the compacted backbone, and that backbone as saved and reloaded with each
// domain's exported memory attached (what the evaluation measures).
struct Exported {
  nn::Transformer backbone, saved;
  std::vector<LoadedMemory> memories;
};
Exported export_run(const OffloadJob& job, const nn::Transformer& base, const OffloadTrainer& trainer,
                    const std::vector<std::string>& names, const Note& note) {
  const fs::path out(job.out_dir);
  const FinalMask& mask = trainer.mask();
  nn::Transformer backbone = compact(base, mask, provenance(job));
  backbone.save((out / "backbone").string(), job.save_dtype == "bf16" ? DType::bf16 : DType::f32);
  io::write_file_atomic(out / "backbone" / "tokenizer.json", nn::tokenizer_json_text(job.model_dir));
  // Evaluate what was exported: the backbone as saved, reloaded.
  nn::Transformer saved = nn::Transformer::load((out / "backbone").string(), job.dtype);
  saved.to(job.device);
  std::vector<LoadedMemory> memories;
  if (trainer.bank()) {
    for (size_t d = 0; d < names.size(); ++d) {
      const fs::path dir = out / "memories" / names[d];
      export_memory(*trainer.bank(), static_cast<int64_t>(d), mask, backbone, dir.string());
      memories.push_back(load_memory(dir.string(), saved));
    }
  }
  note(fmt::format("exported {} ({} -> {} parameters; {:.2f}% of the prunable size removed)",
                   (out / "backbone").string(), base.num_parameters(), backbone.num_parameters(), 100 * mask.sparsity()));
  return {std::move(backbone), std::move(saved), std::move(memories)};
}

// prune-only, binary: the same mask with every kept unit at 1 (no z_det scales folded in), so that
// "prune-only" is not also a learned per-unit rescaling.
nn::Transformer binary_backbone(const OffloadJob& job, const nn::Transformer& base, const FinalMask& mask) {
  FinalMask bin = mask;
  for (auto* zs : {&bin.z_heads, &bin.z_neurons})
    for (Tensor& z : *zs) {
      z = z.clone();  // host f32
      for (int64_t i = 0; i < z.numel(); ++i) z.data<float>()[i] = z.data<float>()[i] > 0 ? 1.0f : 0.0f;
    }
  nn::Transformer binary = compact(base, bin, provenance(job));
  binary.to(job.device);
  return binary;
}

// eval.json: per domain, the perplexity and per-window NLL of the dense model, the backbone alone,
// the backbone with its own memory (and prune-only's binary mask), all on the same windows; the
// D x D cross-memory matrix (KOFF); the LAPE analysis (a learned mask).
void evaluate_run(const OffloadJob& job, const nn::Transformer& base, const OffloadTrainer& trainer,
                  const Exported& exported, const DomainStreams& ds,
                  const Note& note) {
  const OffloadSettings& s = job.settings;
  const FinalMask& mask = trainer.mask();
  const std::vector<std::string>& names = ds.names;
  const auto& valid = ds.valid;
  const nn::Transformer& saved = exported.saved;
  const auto& memories = exported.memories;
  json eval = {{"variant", variant_name(s)}, {"target", s.target}, {"achieved", mask.sparsity()},
               {"removed_fraction_of_all", mask.removed / total_parameters(base.config())}, {"domains", names},
               {"seed", s.seed}, {"control", trainer.control_summary().to_json()},
               {"eval_seq", job.eval_seq}, {"eval_tokens", job.eval_tokens},
               {"parameters", {{"base", base.num_parameters()}, {"backbone", exported.backbone.num_parameters()}}}};
  std::optional<nn::Transformer> binary;
  if (!s.has_memory()) binary = binary_backbone(job, base, mask);
  for (size_t d = 0; d < names.size(); ++d) {
    // Every row of a domain on the same windows: the report's bootstrap intervals are paired.
    json row, nll;
    auto measure = [&](const char* name, const nn::Transformer& m, const std::vector<nn::LayerHooks>* hooks) {
      const nn::Perplexity p = nn::perplexity(m, valid[d], job.eval_seq, 0, hooks);
      row[name] = p.ppl();
      nll[name] = p.window_nll;
      if (!eval.contains("window_tokens") || !eval["window_tokens"].contains(names[d]))
        eval["window_tokens"][names[d]] = p.window_tokens;
    };
    if (job.eval_dense) measure("dense", base, nullptr);
    if (s.learn_mask) measure("backbone", saved, nullptr);
    if (!memories.empty()) {
      auto hooks = memories[d].hooks();
      measure("memory", saved, &hooks);
    }
    if (binary) measure("binary", *binary, nullptr);
    eval["ppl"][names[d]] = row;
    eval["nll"][names[d]] = nll;
    std::string line = fmt::format("  {:<8}", names[d]);
    for (auto [key, label] : {std::pair{"dense", "dense"}, std::pair{"backbone", "backbone"},
                              std::pair{"binary", "binary mask"}, std::pair{"memory", "+ own memory"}})
      if (row.contains(key)) line += fmt::format(" | {} {:8.2f}", label, row[key].get<double>());
    note(line);
  }
  if (!memories.empty() && s.memory.lora && s.memory.kv && s.learn_mask) {
    // cross[e][m]: valid split of domain e (its first cross_tokens), memory of domain m
    json cross = json::array();
    for (size_t e = 0; e < names.size(); ++e) {
      const std::vector<int32_t> part = head(valid[e], job.cross_tokens);
      json row = json::array();
      for (size_t m = 0; m < names.size(); ++m) {
        auto hooks = memories[m].hooks();
        row.push_back(ppl(saved, part, job.eval_seq, &hooks));
      }
      cross.push_back(row);
    }
    eval["cross"] = cross;
    eval["cross_tokens"] = job.cross_tokens;
  }
  if (s.learn_mask) {
    std::vector<std::vector<int32_t>> lape_valid;
    for (const auto& v : valid) lape_valid.push_back(head(v, job.lape_tokens));
    eval["lape"] = lape(base, lape_valid, job.eval_seq, mask);
  }
  io::write_file_atomic(fs::path(job.out_dir) / "eval.json", eval.dump(2));
}

// mask.json: kept query heads and neurons per layer, and which heads.
void write_mask(const fs::path& out, const FinalMask& mask) {
  json masks = {{"layers", json::array()}};
  for (size_t l = 0; l < mask.keep_heads.size(); ++l) {
    int64_t heads = std::count(mask.keep_heads[l].begin(), mask.keep_heads[l].end(), true);
    int64_t neurons = std::count(mask.keep_neurons[l].begin(), mask.keep_neurons[l].end(), true);
    masks["layers"].push_back({{"kept_heads", heads}, {"heads", mask.keep_heads[l].size()}, {"kept_neurons", neurons},
                               {"neurons", mask.keep_neurons[l].size()}, {"keep_heads", mask.keep_heads[l]}});
  }
  io::write_file_atomic(out / "mask.json", masks.dump());
}

}  // namespace

bool run_offload(const OffloadJob& job) {
  validate(job);  // then the checks that need the model, the tokens and run.json: nothing is written before
  const OffloadSettings& s = job.settings;
  auto note = [&](const std::string& m) {
    if (job.progress) job.progress(StepReport::note(m));
  };
  nn::Transformer base = nn::Transformer::load(job.model_dir, job.dtype);
  base.to(job.device);
  Tokenizer tok = nn::load_tokenizer(job.model_dir);
  const auto& eos_ids = base.config().eos_token_ids;
  const int64_t eos = eos_ids.empty() ? -1 : eos_ids.front();
  const auto domains = data::list_domains(job.data_dir);
  const DomainStreams ds = read_domains(job, domains, tok, eos);
  const fs::path out(job.out_dir);
  const bool root = !job.comm || job.comm->is_root();
  // What this run is (run_identity.h): resuming another run's checkpoints is refused.
  const json fingerprint = run_fingerprint(job.model_dir, domains, s.to_json());
  if (!job.force_new) check_resume_identity(out, fingerprint);
  OffloadTrainer trainer(base, ds.names, ds.train, s, out.string(), job.comm,
                         static_cast<size_t>(job.bucket_mb * 1024 * 1024), job.grad_comm);
  start_run_directory(job, ds.names, fingerprint, root, note);
  note_run(job, ds.names.size(), note);
  profile::Ceilings ceilings;
  if (job.profile && root) {
    // Ceilings measured here, in the same run as the step they judge (sized down on the CPU).
    const bool host = backend_for(job.device).host_memory;
    ceilings = profile::measure_ceilings(job.device, job.dtype, host ? (size_t{256} << 20) : (size_t{2} << 30),
                                         host ? 1024 : 8192);
    trainer.set_profile(true);
  }
  trainer.set_adaptive_threads(job.adaptive_threads);
  if (!trainer.run(job.progress, job.interrupt)) return false;
  if (job.profile && root && trainer.step_profile().step >= 0) write_profile(job, trainer, ceilings, note);
  if (!root) return true;  // rank 0 exports and evaluates what every rank holds
  const Exported exported = export_run(job, base, trainer, ds.names, note);
  evaluate_run(job, base, trainer, exported, ds, note);
  write_mask(out, trainer.mask());
  return true;
}

}  // namespace koff::offload
