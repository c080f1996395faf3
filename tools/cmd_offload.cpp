// `koff offload` (the main job), `koff report` and `koff demo`.
#include <chrono>
#include <csignal>
#include <filesystem>

#include "engine/dist/communicator.h"
#include "engine/koff/experiment.h"
#include "engine/tensor/interrupt.h"
#include "tools/cli.h"
#include "tools/progress.h"

namespace {

namespace fs = std::filesystem;
using koff::offload::OffloadJob;

// Progress: step, loss, what the sparsity control did (s_hat against this step's target, hard
// sparsity, undecided share, the shift b or lambda1), tokens/s, ETA.
std::function<void(const koff::offload::StepReport&)> progress_printer(koff::cli::Progress& p, int64_t log_every,
                                                                       std::string control) {
  return [&p, log_every, control](const koff::offload::StepReport& r) {
    if (!r.message.empty()) return p.note(r.message);
    if (r.step % log_every != 0 && r.step != r.steps) return;
    const double per_step = r.step > 0 ? r.elapsed / std::max<double>(1, r.step) : 0;
    const std::string gates =
        r.phase == "mask" && control != "none"
            ? fmt::format(" | s_hat {:.3f} (t {:.3f}) hard {:.3f} undecided {:.3f} | {} {:+.3f}", r.gates.expected_sparsity,
                          r.target, r.gates.hard_sparsity, r.gates.undecided, control == "project" ? "b" : "lambda1",
                          r.multiplier)
            : "";
    p.report(fmt::format("{} step {}/{} | loss {:.4f}{} | {:.0f} tok/s | ETA {}", r.phase, r.step, r.steps, r.loss,
                         gates, r.tokens_per_second,
                         koff::cli::format_duration(per_step * static_cast<double>(r.steps - r.step))));
  };
}
std::string control_label(const koff::offload::OffloadSettings& s) {
  return s.learn_mask ? s.sparsity_control : "none";
}

void add_settings_options(CLI::App& sub, OffloadJob& job, bool& no_lora, bool& no_kv, bool& no_mask) {
  auto& s = job.settings;
  sub.add_option("--steps", s.steps, "mask-learning steps")->capture_default_str();
  sub.add_option("--batch", s.batch, "sequences per step (domains take turns)")->capture_default_str();
  sub.add_option("--seq", s.seq, "tokens per sequence")->capture_default_str();
  sub.add_option("--accum", s.accum, "gradient accumulation micro-batches per step")->capture_default_str();
  sub.add_option("--warmup-frac", s.warmup_frac,
                 "fraction of steps over which the target ramps up (lagrangian: at least 60 steps)")
      ->capture_default_str();
  sub.add_option("--sparsity-control", s.sparsity_control,
                 "project: shift every log_alpha after each step so that s_hat = t exactly; lagrangian: "
                 "N (lambda1 (s_hat - t) + mu (s_hat - t)^2), lambda1 by SGD ascent")
      ->capture_default_str();
  sub.add_option("--penalty", s.penalty, "lagrangian: the fixed quadratic weight mu")->capture_default_str();
  sub.add_option("--decide", s.decide,
                 "(ours) weight rho of the decision term that pushes gates away from p_open 0.5 after the ramp, "
                 "rising from 0 to rho (0 = off)")
      ->capture_default_str();
  sub.add_option("--lr-gates", s.lr_gates, "AdamW lr of log_alpha")->capture_default_str();
  sub.add_option("--lr-memory-gate", s.lr_memory_gate, "AdamW lr of the memory gates (--kv-init neutral)")
      ->capture_default_str();
  sub.add_option("--lr-lambda", s.lr_lambda, "lagrangian: SGD ascent rate of lambda1")->capture_default_str();
  sub.add_option("--lr-memory", s.lr_memory, "AdamW lr of LoRA and KV memories")->capture_default_str();
  sub.add_flag("--no-lora", no_lora, "learn no LoRA adapters");
  sub.add_flag("--no-kv", no_kv, "learn no KV memories");
  sub.add_flag("--no-mask", no_mask,
               "learn no mask: memories alone on the dense model, the adaptation baseline (needs --target 0)");
  sub.add_option("--lora-rank", s.memory.rank, "LoRA rank r")->capture_default_str();
  sub.add_option("--alpha", s.memory.alpha, "LoRA alpha")->capture_default_str();
  sub.add_option("--slots", s.memory.slots, "KV memory slots m per layer and KV head")->capture_default_str();
  sub.add_option("--kv-init", s.memory.kv_init,
                 "KV memory init: random (default), text or neutral (text keys/values behind a per-layer, per-KV-head "
                 "memory gate that starts at 0)")
      ->capture_default_str();
  sub.add_option("--kd", s.kd, "distillation weight kappa of KL(p_dense || p_model) per token (0 = off)")
      ->capture_default_str();
  sub.add_option("--recovery-steps", s.recovery_steps, "memory-only steps on the fixed final mask")->capture_default_str();
  sub.add_option("--seed", s.seed, "seed of gate samples, batches and inits")->capture_default_str();
  sub.add_option("--checkpoint-every", s.checkpoint_every, "steps between checkpoints")->capture_default_str();
  sub.add_option("--eval-tokens", job.eval_tokens, "valid tokens per domain and evaluation (0 = all)")->capture_default_str();
  sub.add_option("--eval-seq", job.eval_seq, "evaluation window, tokens")->capture_default_str();
  sub.add_option("--cross-tokens", job.cross_tokens, "valid tokens per domain for the cross-memory matrix")
      ->capture_default_str();
  sub.add_option("--save-dtype", job.save_dtype, "backbone weights on disk: f32 or bf16")->capture_default_str();
}

// Ctrl-C outside a training step (the trainer words its own): where the run stands.
koff::Interrupted interrupted_in(const koff::Interrupted& e, const std::string& out) {
  const std::string m = e.what();
  if (m.find("run the same command") != std::string::npos) return e;
  return koff::Interrupted(fmt::format("{}: the checkpoints in {}/ckpt are kept; run the same command again to resume",
                                       m, out));
}

// --device / --dtype (tools/cli.h) and --profile.
struct DeviceOptions : koff::cli::DeviceOptions {
  bool profile = false;
};
void add_device_options(CLI::App& sub, DeviceOptions& d) {
  koff::cli::add_device_options(sub, d);
  sub.add_flag("--profile", d.profile,
               "time every op of one training step; print it with the step's MFU and bandwidth against ceilings "
               "measured in the same run (also <out>/profile.txt)");
}
void apply_device_options(const DeviceOptions& d, OffloadJob& job) {
  job.dtype = d.resolved_dtype();  // checked first: a bad --dtype needs no GPU to be reported
  job.device = d.resolved_device();
  job.profile = d.profile;
}

const bool offload_registered = koff::cli::add_command({"offload", "learn a mask + domain memories, export backbone and memories",
    [](CLI::App& sub) {
      auto job = std::make_shared<OffloadJob>();
      auto no_lora = std::make_shared<bool>(false), no_kv = std::make_shared<bool>(false);
      auto no_mask = std::make_shared<bool>(false);
      auto dev = std::make_shared<DeviceOptions>();
      sub.add_option("--model", job->model_dir, "base model: a directory (config.json, safetensors, tokenizer.json) or a GGUF file")->required();
      sub.add_option("--data", job->data_dir, "data directory: <domain>/train.txt and <domain>/valid.txt")->required();
      sub.add_option("--target", job->settings.target, "target sparsity of the prunable size, in [0, 1)")->required();
      sub.add_option("--out", job->out_dir, "run directory")->required();
      add_settings_options(sub, *job, *no_lora, *no_kv, *no_mask);
      sub.add_option("--bucket-mb", job->bucket_mb, "data parallel: gradient all-reduce bucket size, MiB")
          ->capture_default_str();
      sub.add_flag("--force-new", job->force_new,
                   "start over when --out holds another run (other model, data or settings): its files are removed; "
                   "without it such a run is refused");
      add_device_options(sub, *dev);
      sub.add_flag("--fixed-threads", [job](int64_t n) { job->adaptive_threads = n == 0; },
                   "CPU: run every step on the starting thread count (OMP_NUM_THREADS, else all cores); by "
                   "default fewer threads run while other processes hold cores, chosen by timing the steps "
                   "(logged when it acts)");
      return [=]() {
        job->settings.memory.lora = !*no_lora;
        job->settings.memory.kv = !*no_kv;
        job->settings.learn_mask = !*no_mask;
        apply_device_options(*dev, *job);
        // Under mpirun or torchrun-style variables: this rank of the data-parallel group (README).
        std::unique_ptr<koff::dist::Communicator> comm = koff::dist::from_environment();
        // GPU ranks: the gradient buckets go through NCCL, or through the host (tools/cli.h).
        std::unique_ptr<koff::dist::Communicator> grad_comm;
        try {
          if (comm->world_size() > 1 && !job->device.is_cpu())
            grad_comm = koff::cli::make_device_communicator(*comm, job->device);
        } catch (...) {
          comm->abandon();
          throw;
        }
        job->grad_comm = grad_comm.get();
        try {
          koff::offload::validate(*job);  // nothing is written on bad input
          koff::cli::Progress progress;
          if (comm->is_root())
            job->progress = progress_printer(progress, job->settings.log_every, control_label(job->settings));
          job->interrupt = koff::cli::install_interrupt_handler();
          job->comm = comm.get();
          if (!koff::offload::run_offload(*job)) {
            if (comm->is_root()) progress.note("interrupted: checkpoint saved; run the same command again to resume");
            return 130;
          }
          if (!comm->is_root()) return 0;  // rank 0 reports
          progress.finish();
          fmt::print("{}", koff::offload::write_report(job->out_dir));
          fmt::print("report: {}/report.md\n", job->out_dir);
          return 0;
        } catch (const koff::Interrupted& e) {
          // Inside a step (the trainer's message says which checkpoint stays), an evaluation or the
          // export: what was written whole stays, temporaries are gone; every rank leaves.
          if (grad_comm) grad_comm->abandon();
          comm->abandon();
          throw interrupted_in(e, job->out_dir);
        } catch (...) {
          // A failing rank leaves without the orderly MPI shutdown, which would wait for ranks that
          // wait for it: the launcher sees the exit and stops the job.
          if (grad_comm) grad_comm->abandon();
          comm->abandon();
          throw;
        }
      };
    }});

const bool report_registered = koff::cli::add_command({"report", "section-8 table, cross matrix, LAPE analysis, plots",
    [](CLI::App& sub) {
      auto dir = std::make_shared<std::string>();
      sub.add_option("run", *dir, "a run directory, or a directory of runs")->required();
      return [=]() {
        fmt::print("{}", koff::offload::write_report(*dir));
        fmt::print("report: {}/report.md\n", *dir);
        return 0;
      };
    }});

const bool demo_registered = koff::cli::add_command({"demo", "the whole method on the embedded model and corpus (or SmolLM2); CPU unless --device cuda",
    [](CLI::App& sub) {
      struct Options {
        std::string out = "koff-demo";
        std::string model = std::string(KOFF_SOURCE_DIR) + "/models/embedded";
        std::string data = std::string(KOFF_SOURCE_DIR) + "/data/corpus";
        std::vector<double> targets = {0.12, 0.25};
        int64_t seeds = 1;
        OffloadJob base;
        DeviceOptions device;
      };
      auto o = std::make_shared<Options>();
      o->base.settings.steps = 200;  // README "The demo's table": the gates decided, 11 runs in ~10.5 min on 2 cores
      o->base.settings.batch = 6;
      o->base.settings.seq = 64;
      o->base.settings.log_every = 5;
      o->base.settings.checkpoint_every = 100;
      o->base.eval_tokens = 16384;
      o->base.eval_seq = 256;
      sub.add_option("--out", o->out, "output directory")->capture_default_str();
      sub.add_option("--model", o->model,
                     "base model: a directory, a GGUF file, or 'smollm2' (SmolLM2-135M-Instruct on the four English "
                     "domains, fetched and built by tools/setup.sh; its own defaults: targets 0.05,0.12, 120 steps of "
                     "4 x 128 tokens) (default: the embedded model)");
      sub.add_option("--data", o->data, "data directory (default: the embedded corpus)");
      sub.add_option("--targets", o->targets, "target sparsities")->capture_default_str()->delimiter(',');
      sub.add_option("--steps", o->base.settings.steps, "mask-learning steps per run")->capture_default_str();
      sub.add_option("--batch", o->base.settings.batch, "sequences per step")->capture_default_str();
      sub.add_option("--seq", o->base.settings.seq, "tokens per sequence")->capture_default_str();
      sub.add_option("--eval-tokens", o->base.eval_tokens, "valid tokens per domain (0 = the whole valid split)")
          ->capture_default_str();
      sub.add_option("--eval-seq", o->base.eval_seq, "evaluation window, tokens")->capture_default_str();
      sub.add_option("--seeds", o->seeds,
                     "seeds 1..N of every run (gate samples, batches, inits); the report's intervals resample seeds "
                     "and windows")
          ->capture_default_str();
      sub.add_option("--sparsity-control", o->base.settings.sparsity_control, "project or lagrangian")
          ->capture_default_str();
      sub.add_option("--kv-init", o->base.settings.memory.kv_init, "KV memory init")->capture_default_str();
      add_device_options(sub, o->device);
      return [=, app = &sub]() {
        apply_device_options(o->device, o->base);
        if (o->model == "smollm2") {
          // The real pretrained model on CPU: sized to finish in well under an hour on 2 cores.
          const fs::path cache = fs::path(KOFF_SOURCE_DIR) / ".cache";
          o->model = (cache / "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf").string();
          if (!app->count("--data")) o->data = (cache / "domains").string();
          if (!app->count("--out")) o->out = "koff-demo-smollm2";
          if (!app->count("--targets")) o->targets = {0.05, 0.12};
          if (!app->count("--steps")) o->base.settings.steps = 120;  // gates decided: bench/RESULTS.md
          if (!app->count("--batch")) o->base.settings.batch = 4;
          if (!app->count("--seq")) o->base.settings.seq = 128;
          if (!app->count("--eval-seq")) o->base.eval_seq = 512;
          o->base.settings.checkpoint_every = 20;
          KOFF_CHECK(fs::exists(o->model) && fs::exists(fs::path(o->data) / "novel"),
                     "{} or {} is missing: run `bash tools/setup.sh` (it fetches SmolLM2 and builds the English "
                     "domains)",
                     o->model, o->data);
        }
        koff::cli::Progress progress;
        const auto t0 = std::chrono::steady_clock::now();
        const std::atomic<bool>* interrupt = koff::cli::install_interrupt_handler();
        // Per seed: the adaptation baseline (memories on the dense model, no mask; it evaluates the
        // dense model too), then at each target prune-only, KOFF-LoRA, KOFF-KV and KOFF. A run's
        // directory is its variant's name (variant_name), with the target when it learns a mask.
        struct Variant {
          bool learn_mask, lora, kv;
        };
        const Variant baselines[] = {{false, true, false}, {false, false, true}, {false, true, true}};
        const Variant pruned[] = {{true, false, false}, {true, true, false}, {true, false, true}, {true, true, true}};
        for (int64_t seed = 1; seed <= o->seeds; ++seed) {
          std::vector<std::pair<Variant, double>> runs;
          for (const Variant& v : baselines) runs.emplace_back(v, 0.0);
          for (double t : o->targets)
            for (const Variant& v : pruned) runs.emplace_back(v, t);
          for (size_t i = 0; i < runs.size(); ++i) {
            const auto& [v, t] = runs[i];
            OffloadJob job = o->base;
            job.model_dir = o->model;
            job.data_dir = o->data;
            job.settings.seed = static_cast<uint64_t>(seed);
            job.settings.learn_mask = v.learn_mask;
            job.settings.target = t;
            job.settings.memory.lora = v.lora;
            job.settings.memory.kv = v.kv;
            job.eval_dense = i == 0;
            const std::string variant = koff::offload::variant_name(job.settings);
            const std::string name = v.learn_mask ? fmt::format("{}-{:02.0f}", variant, 100 * t) : variant;
            job.out_dir = (fs::path(o->out) / fmt::format("seed-{}", seed) / name).string();
            if (fs::exists(fs::path(job.out_dir) / "eval.json")) {
              progress.note(fmt::format("{}: done earlier", job.out_dir));
              continue;
            }
            job.progress = progress_printer(progress, job.settings.log_every, control_label(job.settings));
            job.interrupt = interrupt;
            try {
              if (!koff::offload::run_offload(job)) {
                progress.note("interrupted: run `koff demo` again with the same --out to continue");
                return 130;
              }
            } catch (const koff::Interrupted& e) {
              throw koff::Interrupted(fmt::format("{} (run `koff demo` again with the same --out to continue)",
                                                  interrupted_in(e, job.out_dir).what()));
            }
          }
        }
        progress.finish();
        fmt::print("\n{}", koff::offload::write_report(o->out));
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        fmt::print("report: {}/report.md   ({} on this machine)\n", o->out, koff::cli::format_duration(secs));
        return 0;
      };
    }});

}  // namespace
