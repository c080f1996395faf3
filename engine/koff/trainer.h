// Joint training of the mask and the memories (KOFF_METHOD.md sections 4 and 6).
//
// A step: one gate sample z ~ hard-concrete(log_alpha) keyed by (seed, step); a batch that cycles
// through the domains (sequence j of the step belongs to domain (step*B + j) mod D, so every step
// sees every domain equally), each sequence routed to its own domain's memory;
//   L = sum of token cross-entropies / (true token count of the accumulated batch)
// minimised in log_alpha and the memories, while the expected sparsity s_hat follows the target t
// (ramping linearly from 0): by default a projection after each step (one shift of every log_alpha
// that puts s_hat exactly on t), or a repaired Lagrangian N (lambda1 (s_hat - t) + mu (s_hat - t)^2)
// with lambda1 by SGD ascent; engine/koff/sparsity_control.h.
// With kd > 0 (option, off by default) each token also pays kappa * KL(p_dense || p_model), the
// teacher being the same frozen weights with no mask and no memory.
// Parameter groups: log_alpha lr 0.1 (clamped to +-4.6), memories lr 1e-3 with linear warmup and
// cosine decay; no weight decay. learn_mask = false trains the memories alone on the dense model
// (the adaptation baseline: no gates, final mask = keep everything).
//
// Everything a step depends on is a function of (seed, step) or saved in the checkpoint (gates,
// lambdas, memories, AdamW state, step), so an interrupted run resumed gives bit-identical results.
//
// Devices and precision: everything lives where the frozen model lives (cpu, or cuda:0). The
// trainables (log_alpha, lambdas, LoRA and KV tables) and the AdamW state are f32 there whatever the
// model's dtype; with a bf16 model a step casts what it uses to bf16 (autograd::cast, whose backward
// casts the gradient back), so AdamW updates f32 masters. Token ids and the gate uniforms are made on
// the host and copied over once per micro-batch; checkpoints and the final mask are host copies.
//
// Data parallel (a Communicator of W > 1 ranks, engine/dist): `batch` stays the GLOBAL batch. Rank r
// builds sequences [r*B/W, (r+1)*B/W) of every micro-batch of the step (the same global sequence
// indices, hence the same windows of the same domains, as one process would), divides by the global
// token count, and the gradients of the trainables are summed over ranks (GradReducer: f32 buckets,
// overlapped with the backward). The control (the projection, or the Lagrangian's gradient), identical
// on every rank, acts after the sum; the gate sample needs no communication (seed, step). So W ranks train what one process
// does with the same global batch, up to float summation order. Loss (for logging), the stop
// request and the non-finite check are reduced so every rank takes the same branch; only rank 0
// writes (checkpoints, metrics); every rank reads the checkpoint on resume (a shared filesystem).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/dist/communicator.h"
#include "engine/dist/grad_reducer.h"
#include "engine/koff/gates.h"
#include "engine/koff/memory.h"
#include "engine/koff/sparsity_control.h"
#include "engine/nn/optim.h"
#include "engine/ops/profile.h"

namespace koff::offload {

struct OffloadSettings {
  double target = 0.12;
  int64_t steps = 200, batch = 6, seq = 128, accum = 1;
  double warmup_frac = 0.2;  // target ramp (the lagrangian's at least 60 steps)
  std::string sparsity_control = "project";  // or "lagrangian" (engine/koff/sparsity_control.h)
  double penalty = 10.0;     // lagrangian: the fixed quadratic weight mu
  double decide = 1e-3;      // rho of the decision term (ours; sparsity_control.h, bench/RESULTS.md; 0 = off)
  double clamp_log_alpha = 4.6;
  bool learn_mask = true;    // false: memories alone on the dense model (no gates; target must be 0)
  double lr_gates = 0.5, lr_lambda = 0.1, lr_memory = 1e-3, memory_warmup_frac = 0.05;  // lr_gates: bench/RESULTS.md
  double lr_memory_gate = 0.05;  // --kv-init neutral: AdamW lr of the memory gates
  double init_log_alpha = 3.0;
  double kd = 0.0;  // (ours, option) kappa of the distillation term kappa * KL(p_dense || p_model) per token
  uint64_t seed = 1;
  int64_t log_every = 10, checkpoint_every = 50, recovery_steps = 0;
  MemoryConfig memory;  // memory.lora = memory.kv = false: prune-only
  bool has_memory() const { return memory.lora || memory.kv; }
  ControlSettings control() const;
  nlohmann::json to_json() const;
  static OffloadSettings from_json(const nlohmann::json& j);
};

struct StepReport {
  std::string phase;  // "mask" or "recovery"
  int64_t step = 0, steps = 0;  // step: the number of steps done
  double loss = 0;
  double target = 0;       // the target t the last step was controlled to
  GateFigures gates;       // s_hat, hard sparsity and undecided share after the last step
  double multiplier = 0;   // project: the shift b; lagrangian: lambda1
  double tokens_per_second = 0, elapsed = 0;
  std::string message;  // non-empty for notes
  static StepReport note(std::string m) {
    StepReport r;
    r.message = std::move(m);
    return r;
  }
};

// What the control achieved, for eval.json and the report.
struct ControlSummary {
  std::string mode;
  GateFigures end;           // the gates after the last mask-learning step
  double target = 0;
  double mask_override = 0;  // share of P the final sort removed although the gates held it open
  nlohmann::json to_json() const;
};

class OffloadTrainer {
 public:
  // streams[d] is domain d's training token stream. run_dir receives ckpt/ and metrics.jsonl.
  // comm: the data-parallel group (null or one rank: a single process, exactly as before), a host
  // communicator: host scalars (loss, stop flags, checkpoint agreement) go through it;
  // bucket_bytes: the gradient all-reduce bucket size; grad_comm: the communicator of the gradient
  // buckets when the model is on a GPU (NCCL, or host-staged: engine/dist/staged_communicator.h),
  // whose device() must be the model's; null on CPU ranks, where comm reduces them.
  OffloadTrainer(const nn::Transformer& base, std::vector<std::string> domains,
                 std::vector<std::vector<int32_t>> streams, OffloadSettings settings, std::string run_dir,
                 dist::Communicator* comm = nullptr, size_t bucket_bytes = kDefaultBucketBytes,
                 dist::Communicator* grad_comm = nullptr);
  OffloadTrainer(const OffloadTrainer&) = delete;  // the controller points at gates_
  OffloadTrainer& operator=(const OffloadTrainer&) = delete;
  static constexpr size_t kDefaultBucketBytes = size_t{32} << 20;  // 32 MiB: README, data parallelism

  // Trains (resuming from run_dir/ckpt when present) the mask and memories, then computes the final
  // mask and runs the recovery steps. Returns false when interrupted (a checkpoint was saved).
  bool run(const std::function<void(const StepReport&)>& progress = {}, const std::atomic<bool>* interrupt = nullptr);

  const FinalMask& mask() const { return mask_; }
  const ControlSummary& control_summary() const { return summary_; }
  const HardConcreteGates& gates() const { return gates_; }
  const MemoryBank* bank() const { return bank_.get(); }
  const OffloadSettings& settings() const { return settings_; }

  // Layer hooks for evaluating domain d with the final mask (and its memory, unless without_memory).
  std::vector<nn::LayerHooks> eval_hooks(int64_t domain, bool without_memory = false) const;

  // --profile: time every op of one mask-learning step (the second of this process, the first paying
  // one-time costs) with engine/ops/profile.h. The result is there after run() (step < 0: none ran).
  struct StepProfile {
    int64_t step = -1, tokens = 0;
    double step_ms = 0;
    int threads = 0;  // CPU: the OpenMP threads the step ran on (engine/cpu/threads.h may change them)
    std::vector<profile::OpTotal> ops;
  };
  void set_profile(bool on) { profile_ = on; }
  // On the CPU: let engine/cpu/threads.h's governor lower (and raise again, up to the starting count) the
  // OpenMP threads of each step when other processes hold cores. On by default; logged when it acts.
  void set_adaptive_threads(bool on) { adaptive_threads_ = on; }
  const StepProfile& step_profile() const { return profiled_; }
  // f32 (f64 when the model is f64): the dtype of every trainable and of the optimizer state.
  DType trainable_dtype() const { return base_.dtype() == DType::f64 ? DType::f64 : DType::f32; }

  // One step (mask learning, or recovery on the final mask) without logs or checkpoints; returns the
  // step's summed token loss; s_hat_out: the expected sparsity after the step. run() drives it;
  // bench/cuda/gpu_bench.cpp times it.
  double train_step(int64_t step, bool recovery, double* s_hat_out);

 private:
  void save_checkpoint(int64_t step, const std::string& phase);
  bool load_checkpoint(int64_t* step, std::string* phase, std::vector<std::string>* warnings);
  double memory_lr_scale(int64_t step, int64_t total) const;
  bool distributed() const { return comm_ && comm_->world_size() > 1; }
  bool is_root() const { return !comm_ || comm_->is_root(); }
  void check_replicas_agree(int64_t step);

  const nn::Transformer& base_;
  std::vector<std::string> domains_;
  std::vector<std::vector<int32_t>> streams_;
  OffloadSettings settings_;
  std::string run_dir_;
  HardConcreteGates gates_;
  std::unique_ptr<MemoryBank> bank_;
  SparsityController controller_;  // acts on gates_
  struct ControlRecord {
    double target = 0, multiplier = 0;
    GateFigures gates;
  } last_;                      // what train_step's control did (logged by run)
  ControlSummary summary_;
  nn::AdamW opt_;              // groups: gates (unless !learn_mask), memory
  nn::AdamW recovery_opt_;     // memory only
  FinalMask mask_;
  std::vector<autograd::Variable> fixed_heads_, fixed_neurons_;  // the final mask as constants
  dist::Communicator* comm_ = nullptr;
  std::unique_ptr<dist::GradReducer> reducer_, recovery_reducer_;  // mask phase: gates + memory; recovery: memory
  const std::atomic<bool>* interrupt_ = nullptr;
  bool stop_all_ = false;  // some rank was interrupted (reduced with the loss every step)
  bool profile_ = false;
  bool adaptive_threads_ = true;
  StepProfile profiled_;
};

}  // namespace koff::offload
