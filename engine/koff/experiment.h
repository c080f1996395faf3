// The job of `koff offload` and the report of `koff report` (KOFF_METHOD.md sections 7-9).
//
// One offload run: learn the mask and memories on the domains' train splits, take the exact-target
// final mask, export the compacted backbone and each domain's memory, then evaluate on the valid
// splits through what was exported (the compacted backbone with each memory attached): dense,
// backbone alone, own memory, and the D x D cross matrix; plus the LAPE analysis of the dense model.
// Everything lands in the run directory:
//   run.json  metrics.jsonl  ckpt/  backbone/  memories/<domain>/{memory.*, peft/}  eval.json  mask.json
// Data parallel (job.comm of several ranks): every rank trains its share of each step's batch; only
// rank 0 writes the run directory, exports and evaluates; the others return after training.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "engine/koff/trainer.h"

namespace koff::offload {

struct OffloadJob {
  std::string model_dir, data_dir, out_dir;
  OffloadSettings settings;
  int64_t eval_tokens = 16384;  // per domain and evaluation (0 = the whole valid split)
  int64_t eval_seq = 256;
  int64_t cross_tokens = 2048;  // per domain, for the D x D cross-memory matrix (D^2 evaluations)
  int64_t lape_tokens = 8192;   // per language, for the LAPE activation statistics of the dense model
  bool eval_dense = true;       // also evaluate the dense model (koff demo: once per seed)
  std::string save_dtype = "f32";  // backbone weights on disk: f32 or bf16
  // Start over in an --out that holds another run (its files are removed once every check passed);
  // without it such a run is refused (engine/koff/run_identity.h).
  bool force_new = false;
  const std::atomic<bool>* interrupt = nullptr;
  std::function<void(const StepReport&)> progress;
  dist::Communicator* comm = nullptr;  // the data-parallel group (host); null: one process
  // GPU ranks: the communicator of the gradient buckets on `device` (NCCL or host-staged; the CLI
  // picks it: tools/device.cpp). Null on CPU ranks.
  dist::Communicator* grad_comm = nullptr;
  double bucket_mb = 32;               // gradient all-reduce bucket, MiB
  // Where the frozen model computes, in which dtype: cpu f32 (the reference), or cuda f32/bf16 (the
  // trainables stay f32 either way). The caller registers the device's backend (tools/cli.h).
  Device device = Device::cpu();
  DType dtype = DType::f32;
  // Time every op of one training step and print it with the step's MFU and bandwidth against
  // ceilings measured in the same run (engine/ops/profile.h); also written to <out>/profile.txt.
  bool profile = false;
  // CPU: run fewer OpenMP threads while other processes hold cores, chosen by measuring the steps
  // (engine/cpu/threads.h); false (--fixed-threads): the starting count for every step.
  bool adaptive_threads = true;
};

// Checks everything a run needs (model, tokenizer, domains, settings) before anything is written;
// throws koff::Error naming the problem.
void validate(const OffloadJob& job);

// Runs the job. Returns false when interrupted (resumable with the same command).
bool run_offload(const OffloadJob& job);

// The variant name of a run: prune-only, KOFF-LoRA, KOFF-KV, KOFF; without mask learning (the
// adaptation baseline) dense+LoRA, dense+KV, dense+LoRA+KV.
std::string variant_name(const OffloadSettings& s);

// Builds <dir>/report.md (+ PNG plots when gnuplot is present) from the runs under dir (each a
// sub-directory with eval.json) or from dir itself when it is a run. Returns the markdown table of
// section 8 (also printed by `koff demo`).
std::string write_report(const std::string& dir);

}  // namespace koff::offload
