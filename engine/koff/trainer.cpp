#include "engine/koff/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>

#include "engine/cpu/threads.h"
#include "engine/io/atomic_file.h"
#include "engine/io/checkpoint_dir.h"
#include "engine/ops/dispatch.h"
#include "engine/ops/profile.h"
#include "engine/tensor/interrupt.h"

namespace koff::offload {

namespace ag = autograd;
namespace fs = std::filesystem;
using nlohmann::json;

json OffloadSettings::to_json() const {
  return {{"target", target}, {"steps", steps}, {"batch", batch}, {"seq", seq}, {"accum", accum},
          {"warmup_frac", warmup_frac}, {"sparsity_control", sparsity_control}, {"penalty", penalty},
          {"decide", decide},
          {"clamp_log_alpha", clamp_log_alpha}, {"learn_mask", learn_mask}, {"lr_gates", lr_gates},
          {"lr_lambda", lr_lambda}, {"lr_memory", lr_memory}, {"lr_memory_gate", lr_memory_gate}, {"memory_warmup_frac", memory_warmup_frac},
          {"init_log_alpha", init_log_alpha}, {"kd", kd}, {"seed", seed}, {"log_every", log_every},
          {"checkpoint_every", checkpoint_every}, {"recovery_steps", recovery_steps}, {"memory", memory.to_json()}};
}

OffloadSettings OffloadSettings::from_json(const json& j) {
  OffloadSettings s;
  auto get = [&](const char* k, auto& v) {
    if (j.contains(k)) v = j.at(k).get<std::remove_reference_t<decltype(v)>>();
  };
  get("target", s.target), get("steps", s.steps), get("batch", s.batch), get("seq", s.seq), get("accum", s.accum);
  get("warmup_frac", s.warmup_frac), get("sparsity_control", s.sparsity_control), get("penalty", s.penalty);
  get("decide", s.decide);
  get("clamp_log_alpha", s.clamp_log_alpha), get("learn_mask", s.learn_mask);
  get("lr_gates", s.lr_gates), get("lr_lambda", s.lr_lambda);
  get("lr_memory", s.lr_memory), get("lr_memory_gate", s.lr_memory_gate), get("memory_warmup_frac", s.memory_warmup_frac);
  get("init_log_alpha", s.init_log_alpha), get("kd", s.kd), get("seed", s.seed), get("log_every", s.log_every);
  get("checkpoint_every", s.checkpoint_every), get("recovery_steps", s.recovery_steps);
  if (j.contains("memory")) s.memory = MemoryConfig::from_json(j.at("memory"));
  return s;
}

ControlSettings OffloadSettings::control() const {
  ControlSettings c;
  c.mode = sparsity_control_from_name(sparsity_control);
  c.target = target, c.steps = steps, c.warmup_frac = warmup_frac, c.clamp = clamp_log_alpha;
  c.lr_lambda = lr_lambda, c.penalty = penalty, c.decide = decide;
  return c;
}

json ControlSummary::to_json() const {
  return {{"control", mode}, {"target", target}, {"expected_sparsity", end.expected_sparsity},
          {"hard_sparsity", end.hard_sparsity}, {"undecided", end.undecided}, {"final_mask_override", mask_override}};
}

OffloadTrainer::OffloadTrainer(const nn::Transformer& base, std::vector<std::string> domains,
                               std::vector<std::vector<int32_t>> streams, OffloadSettings settings, std::string run_dir,
                               dist::Communicator* comm, size_t bucket_bytes, dist::Communicator* grad_comm)
    : base_(base), domains_(std::move(domains)), streams_(std::move(streams)), settings_(std::move(settings)),
      run_dir_(std::move(run_dir)), comm_(comm) {
  const OffloadSettings& s = settings_;
  KOFF_CHECK(s.target >= 0 && s.target < 1, "--target must be in [0, 1), got {}", s.target);
  KOFF_CHECK(s.steps > 0 && s.batch > 0 && s.seq > 1 && s.accum > 0, "steps, batch, accum must be positive, seq > 1");
  KOFF_CHECK(domains_.size() == streams_.size() && !domains_.empty(), "{} domains but {} token streams",
             domains_.size(), streams_.size());
  for (size_t d = 0; d < streams_.size(); ++d)
    KOFF_CHECK(static_cast<int64_t>(streams_[d].size()) > s.seq + 1,
               "domain '{}' has {} training tokens, too few for windows of {}", domains_[d], streams_[d].size(), s.seq + 1);
  // Trainables are f32 (f64 in gradient checks) on the model's device, also when the frozen model
  // computes in bf16 (mixed precision: the step casts them to the compute dtype, AdamW updates f32).
  KOFF_CHECK(!comm_ || comm_->device().is_cpu(), "{}: the data-parallel group must be a host communicator",
             comm_ ? comm_->where() : "");
  // Gradient buckets live where the trainables do: on CPU ranks the host communicator sums them, on
  // GPU ranks the device communicator (NCCL, or the host-staged one) does.
  dist::Communicator* bucket_comm = grad_comm ? grad_comm : comm_;
  if (comm_ && comm_->world_size() > 1)
    KOFF_CHECK(bucket_comm->device() == base.device(),
               "{}: the model is on {} but the gradient buckets would be reduced on {}: GPU ranks need a device "
               "communicator (NCCL, or host-staged: engine/dist/staged_communicator.h)",
               comm_->where(), base.device().str(), bucket_comm->device().str());
  KOFF_CHECK(s.learn_mask || (s.target == 0 && s.has_memory()),
             "without mask learning (the adaptation baseline) the target must be 0 and some memory learned");
  gates_ = HardConcreteGates(unit_costs(base.config()), s.init_log_alpha, trainable_dtype(), base.device());
  controller_ = SparsityController(s.control(), &gates_);
  if (s.learn_mask) opt_.add_group("gates", gates_.parameters(), {s.lr_gates, 0.9, 0.999, 1e-8, 0.0});
  if (s.has_memory()) {
    bank_ = std::make_unique<MemoryBank>(base, s.memory, domains_, s.seed);
    if (s.memory.kv && (s.memory.kv_init == "text" || s.memory.kv_init == "neutral"))
      bank_->init_kv_from_text(base, streams_, s.seed);
    else
      KOFF_CHECK(s.memory.kv_init == "text" || s.memory.kv_init == "random" || s.memory.kv_init == "neutral",
                 "--kv-init must be text, random or neutral, got '{}'", s.memory.kv_init);
    // The memory gates (--kv-init neutral) in their own group: at the memories' 1e-3 they open by
    // ~1e-3 a step, too slowly to matter within a run (measured: 0.004-0.008 after 100 steps).
    std::vector<ag::Variable> mem = bank_->lora_parameters(), mem_gates;
    for (auto& v : bank_->kv_parameters())
      (v.name().ends_with(".gate") ? mem_gates : mem).push_back(v);
    for (nn::AdamW* o : {&opt_, &recovery_opt_}) {
      o->add_group("memory", mem, {s.lr_memory, 0.9, 0.999, 1e-8, 0.0});
      if (!mem_gates.empty()) o->add_group("memory_gate", mem_gates, {s.lr_memory_gate, 0.9, 0.999, 1e-8, 0.0});
    }
  }
  if (distributed()) {
    KOFF_CHECK(s.batch >= comm_->world_size(),
               "--batch {} is the global batch and must give each of the {} ranks at least one sequence", s.batch,
               comm_->world_size());
    // The data-term gradients are summed over ranks; the control acts after the sum, the same on
    // every rank.
    std::vector<ag::Variable> reduced, mem;
    if (s.learn_mask) reduced = gates_.parameters();
    if (bank_) {
      mem = bank_->lora_parameters();
      for (auto& v : bank_->kv_parameters()) mem.push_back(v);
    }
    reduced.insert(reduced.end(), mem.begin(), mem.end());
    reducer_ = std::make_unique<dist::GradReducer>(*bucket_comm, reduced, bucket_bytes, comm_);
    if (bank_) recovery_reducer_ = std::make_unique<dist::GradReducer>(*bucket_comm, mem, bucket_bytes, comm_);
  }
}

double OffloadTrainer::memory_lr_scale(int64_t step, int64_t total) const {
  const int64_t warm = std::max<int64_t>(1, static_cast<int64_t>(settings_.memory_warmup_frac * total));
  if (step < warm) return static_cast<double>(step + 1) / static_cast<double>(warm);
  const double progress = static_cast<double>(step - warm) / static_cast<double>(std::max<int64_t>(total - warm, 1));
  return 0.1 + 0.9 * 0.5 * (1 + std::cos(3.141592653589793 * std::min(progress, 1.0)));  // cosine to 10%
}

double OffloadTrainer::train_step(int64_t step, bool recovery, double* s_hat_out) {
  const OffloadSettings& s = settings_;
  const int64_t D = static_cast<int64_t>(domains_.size()), B = s.batch, T = s.seq;
  // This rank's share of the global batch: sequences [lo, hi) of each micro-batch (all of it alone).
  const int64_t W = comm_ ? comm_->world_size() : 1, r = comm_ ? comm_->rank() : 0;
  const int64_t lo = B * r / W, hi = B * (r + 1) / W, local = hi - lo;
  dist::GradReducer* reducer = distributed() ? (recovery ? recovery_reducer_.get() : reducer_.get()) : nullptr;
  const double normaliser = static_cast<double>(B * T * s.accum);  // every position has a target
  double loss_sum = 0;
  for (int64_t a = 0; a < s.accum; ++a) {
    // The step's one gate sample, drawn again for each micro-batch: the same values (keyed by seed
    // and step), but a fresh graph, since backward() releases the previous micro-batch's.
    HardConcreteGates::Sample z;
    if (recovery) {
      z = {fixed_heads_, fixed_neurons_};
    } else if (!s.learn_mask) {
      // The adaptation baseline: no gates at all (z = 1 everywhere).
    } else {
      z = gates_.sample(s.seed, step);  // f32, cast to the compute dtype (the cast's backward casts back)
      for (auto& v : z.heads) v = ag::cast(v, base_.dtype());
      for (auto& v : z.neurons) v = ag::cast(v, base_.dtype());
    }
    Tensor ids = Tensor::empty({local, T}, DType::i64), targets = Tensor::empty({local, T}, DType::i64);
    Tensor domain_ids = Tensor::empty({local}, DType::i64);
    // Rows ordered by domain (stable): the sequences of one domain are consecutive, and LoRA runs one
    // GEMM pair per domain rather than per sequence (autograd::linear_lora). The loss is a sum over
    // sequences, so the order changes only the order of float additions.
    std::vector<int64_t> order(static_cast<size_t>(local));
    for (int64_t i = 0; i < local; ++i) order[static_cast<size_t>(i)] = lo + i;
    const auto sequence_index = [&](int64_t g) { return static_cast<uint64_t>((step * s.accum + a) * B + g); };
    const auto domain_of = [&](int64_t g) {
      return static_cast<int64_t>(sequence_index(g) % static_cast<uint64_t>(D));
    };
    std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return domain_of(x) < domain_of(y); });
    for (int64_t i = 0; i < local; ++i) {                                      // row in this rank's batch
      const int64_t g = order[static_cast<size_t>(i)];                         // its sequence in the step
      const uint64_t j = sequence_index(g);                                    // global sequence index
      const int64_t d = static_cast<int64_t>(j % static_cast<uint64_t>(D));
      const auto& stream = streams_[static_cast<size_t>(d)];
      const Philox rng(s.seed, 0xDA7A0000ull + static_cast<uint64_t>(d));
      const int64_t start = static_cast<int64_t>(rng.bits(j) % static_cast<uint64_t>(stream.size() - static_cast<size_t>(T) - 1));
      domain_ids.data<int64_t>()[i] = d;
      for (int64_t t = 0; t < T; ++t) {
        ids.data<int64_t>()[i * T + t] = stream[static_cast<size_t>(start + t)];
        targets.data<int64_t>()[i * T + t] = stream[static_cast<size_t>(start + t + 1)];
      }
    }
    std::vector<nn::LayerHooks> hooks;
    if (bank_) {
      hooks = z.heads.empty() ? bank_->hooks(domain_ids) : bank_->hooks(domain_ids, &z.heads, &z.neurons);
    } else {
      hooks.resize(z.heads.size());
      for (size_t l = 0; l < hooks.size(); ++l) hooks[l].head_gate = z.heads[l], hooks[l].neuron_gate = z.neurons[l];
    }
    nn::ForwardOptions fo;
    fo.hooks = &hooks;
    ag::Variable loss;
    if (s.kd > 0) {
      // Distillation needs the full logits of student and teacher ([B*T, V] each).
      const int64_t V = base_.config().vocab_size;
      Tensor teacher;
      {
        ag::NoGradGuard no_grad;
        teacher = base_.logits(ids).data().reshape({-1, V});
      }
      ag::Variable logits = ag::reshape(base_.logits(ids, fo), {-1, V});
      loss = ag::add(ag::cross_entropy(logits, targets.reshape({-1}).to(base_.device()), normaliser),
                     ag::scale(ag::kl_div(logits, teacher, normaliser), s.kd));
    } else {
      loss = base_.loss(ids, targets, fo, normaliser);
    }
    loss_sum += loss.data().item();
    // The last micro-batch's backward completes the gradients: its hooks start the all-reduce.
    if (reducer && a == s.accum - 1) reducer->arm();
    if (loss.requires_grad()) loss.backward();
  }
  if (reducer) {
    reducer->finish();
    // One small all-reduce: the global loss for the log and the non-finite check, and whether any
    // rank was interrupted, so that every rank takes the same branch.
    double shared[2] = {loss_sum, interrupt_ && interrupt_->load() ? 1.0 : 0.0};
    comm_->all_reduce_sum(shared, 2, dist::ReduceType::f64);
    loss_sum = shared[0];
    stop_all_ = shared[1] > 0;
  }
  KOFF_CHECK(std::isfinite(loss_sum), "{} loss is {} at step {}: stopping; the last good checkpoint in {}/ckpt is kept",
             recovery ? "recovery" : "training", loss_sum, step, run_dir_);

  if (!recovery) {
    // Sparsity control (engine/koff/sparsity_control.h) around the optimiser step of log_alpha.
    if (s.learn_mask) controller_.begin_step(step);
    std::vector<double> scales;  // gates at their lr; memories (and their gates) on warmup + cosine
    for (const auto& g : opt_.groups()) scales.push_back(g.name == "gates" ? 1.0 : memory_lr_scale(step, s.steps));
    opt_.step(scales);
    if (bank_) bank_->project_gates();  // memory gates stay >= 0
    opt_.zero_grad();
    if (s.learn_mask) {
      controller_.end_step();
      last_.target = controller_.target(), last_.multiplier = controller_.multiplier();
      last_.gates = controller_.figures();
      if (s_hat_out) *s_hat_out = last_.gates.expected_sparsity;
    }
  } else {
    const double scale = memory_lr_scale(step - s.steps, s.recovery_steps);
    recovery_opt_.step(std::vector<double>(recovery_opt_.groups().size(), scale));
    if (bank_) bank_->project_gates();
    recovery_opt_.zero_grad();
  }
  return loss_sum;
}

void OffloadTrainer::save_checkpoint(int64_t step, const std::string& phase) {
  const io::CheckpointDir ckpt(fs::path(run_dir_) / "ckpt");
  const fs::path tmp = ckpt.begin(step);
  io::NamedTensors t;  // host copies of device tensors
  auto add = [&t](std::string name, const Tensor& v) { t.emplace_back(std::move(name), v.to(Device::cpu())); };
  for (const auto& v : gates_.parameters()) add(v.name(), v.data());
  add("lambda1", Tensor::full({}, controller_.lambda1(), DType::f64));  // the ascent runs in double
  if (bank_)
    for (auto& [n, v] : bank_->state()) add(n, v);
  for (auto& [n, v] : opt_.state()) add("adam." + n, v);
  for (auto& [n, v] : recovery_opt_.state()) add("adam_recovery." + n, v);
  io::save_safetensors(tmp / "state.safetensors", t);
  json st = {{"step", step}, {"phase", phase}, {"optimizer_steps", opt_.step_count()},
             {"recovery_optimizer_steps", recovery_opt_.step_count()}, {"settings", settings_.to_json()}};
  if (distributed()) st["world_size"] = comm_->world_size();  // absent alone: single-process files unchanged
  io::write_file_atomic(tmp / "state.json", st.dump(2));
  ckpt.commit(step);
}

bool OffloadTrainer::load_checkpoint(int64_t* step, std::string* phase, std::vector<std::string>* warnings) {
  // Newest first: a corrupt newest checkpoint (truncated, unreadable) falls back to the previous one.
  const auto candidates = io::CheckpointDir(fs::path(run_dir_) / "ckpt").newest_first();
  const std::optional<fs::path> latest =
      candidates.empty() ? std::nullopt : std::optional<fs::path>(candidates.front());
  if (distributed()) {
    // Every rank must resume from the same checkpoint: rank 0's is the reference.
    const std::string name = latest ? latest->filename().string() : "";  // "step-N"
    uint64_t mine = std::hash<std::string>{}(name), root = mine;
    comm_->broadcast(&root, sizeof root, 0);
    KOFF_CHECK(mine == root,
               "{}: sees checkpoint {} in {}/ckpt but rank 0 sees {}: the run directory must be on a filesystem "
               "every rank shares",
               comm_->where(), latest ? name : "none", run_dir_, "another");
  }
  for (const fs::path& dir : candidates) {
    json st;
    try {
      std::ifstream sj(dir / "state.json");
      KOFF_CHECK(sj.good(), "{}: no state.json", dir.string());
      try {
        st = json::parse(sj);
      } catch (const json::exception& e) {
        fail("{}: state.json is not valid JSON ({})", dir.string(), e.what());
      }
    } catch (const Error& e) {
      warnings->push_back(fmt::format("warning: skipping checkpoint {}: {}", dir.string(), e.what()));
      continue;
    }
    // Not a corruption but another run: no fallback (run.json's fingerprint normally refuses this first).
    KOFF_CHECK(st.value("settings", json()) == settings_.to_json(),
               "{}: the checkpoint was made with other settings; use a fresh --out or the same settings", dir.string());
    try {
      io::SafetensorsFile f(dir / "state.safetensors");
      const DType dt = trainable_dtype();
      for (auto v : gates_.parameters()) v.mutable_data().copy_(f.load(v.name(), dt));
      controller_.set_lambda1(f.load("lambda1", DType::f64).item());
      if (bank_) bank_->load_state([&](const std::string& n) { return f.load(n, dt); });
      opt_.load_state([&](const std::string& n) { return f.load("adam." + n, dt); }, st.at("optimizer_steps"));
      recovery_opt_.load_state([&](const std::string& n) { return f.load("adam_recovery." + n, dt); },
                               st.at("recovery_optimizer_steps"));
      *step = st.at("step");
      *phase = st.at("phase");
    } catch (const Interrupted&) {
      throw;
    } catch (const std::exception& e) {  // every tensor is loaded again from the next candidate
      warnings->push_back(fmt::format("warning: skipping checkpoint {}: {}", dir.string(), e.what()));
      continue;
    }
    return true;
  }
  KOFF_CHECK(candidates.empty(), "no checkpoint in {}/ckpt is readable (see the warnings above); use --force-new "
             "to start over", run_dir_);
  return false;
}

// The replicas must hold the same trainables (every rank applies the same summed gradient); a
// difference means the collectives gave ranks different sums. A hash of the bits, compared with
// rank 0's wherever a checkpoint is written.
void OffloadTrainer::check_replicas_agree(int64_t step) {
  if (!distributed()) return;
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the bytes of every trainable
  auto mix = [&](const Tensor& t) {
    const Tensor c = t.to(Device::cpu()).contiguous();
    const auto* p = static_cast<const unsigned char*>(c.raw_data());
    for (size_t i = 0; i < c.nbytes(); ++i) h = (h ^ p[i]) * 1099511628211ull;
  };
  for (const auto& v : gates_.parameters()) mix(v.data());
  mix(Tensor::full({}, controller_.lambda1(), DType::f64));
  if (bank_)
    for (auto& [n, v] : bank_->state()) mix(v);
  uint64_t root = h;
  comm_->broadcast(&root, sizeof root, 0);
  KOFF_CHECK(root == h, "{}: after step {} the trainables differ from rank 0's (the replicas diverged)",
             comm_->where(), step);
}

bool OffloadTrainer::run(const std::function<void(const StepReport&)>& progress, const std::atomic<bool>* interrupt) {
  const OffloadSettings& s = settings_;
  if (is_root()) fs::create_directories(run_dir_);  // only rank 0 writes into the run directory
  if (is_root()) io::CheckpointDir(fs::path(run_dir_) / "ckpt").remove_unfinished();  // a dead writer's
  interrupt_ = interrupt;
  int64_t step = 0;
  std::string phase = "mask";
  auto note = [&](const std::string& m) {
    if (progress) progress(StepReport::note(m));
  };
  std::vector<std::string> warnings;
  const bool resumed = load_checkpoint(&step, &phase, &warnings);
  for (const auto& w : warnings) note(w);
  if (resumed) note(fmt::format("resumed {} at step {}", run_dir_, step));
  int64_t saved = resumed ? step : -1;  // the step of the last checkpoint on disk
  // Ctrl-C inside a step (engine/tensor/interrupt.h): the step is abandoned, the checkpoint stays.
  auto abandoned = [&](const Interrupted& e) {
    return Interrupted(fmt::format("{} in step {}: the step was abandoned; {}; run the same command again to resume",
                                   e.what(), step + 1,
                                   saved >= 0 ? fmt::format("the checkpoint of step {} in {}/ckpt is kept", saved, run_dir_)
                                              : std::string("no checkpoint was written yet")));
  };
  std::ofstream metrics;
  if (is_root()) metrics.open(fs::path(run_dir_) / "metrics.jsonl", std::ios::app);
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t first = step;
  const int64_t tokens_per_step = s.batch * s.seq * s.accum;
  // CPU: the OpenMP threads of each step, lowered while other processes hold cores (engine/cpu/threads.h).
  const bool on_cpu = base_.device().is_cpu();
  std::string fixed_why;
  cpu::ThreadGovernor governor = cpu::ThreadGovernor::for_training(on_cpu && adaptive_threads_, &fixed_why);
  if (!fixed_why.empty()) note(fixed_why);
  int step_threads = governor.threads();  // what the last step ran at
  auto governed_step = [&](bool recovery) {
    step_threads = governor.threads();
    return cpu::run_governed_step(governor, [&] { return train_step(step, recovery, nullptr); }, note);
  };
  auto report = [&](double loss) {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    StepReport r;
    r.phase = phase, r.step = step, r.steps = phase == "mask" ? s.steps : s.steps + s.recovery_steps;
    r.loss = loss, r.target = last_.target, r.gates = last_.gates, r.multiplier = last_.multiplier;
    r.tokens_per_second = static_cast<double>((step - first) * tokens_per_step) / std::max(secs, 1e-9);
    r.elapsed = secs;
    if (is_root()) {  // every step: the control's trace is the point of this file
      json m = {{"phase", phase}, {"step", step}, {"loss", loss}, {"tokens_per_s", r.tokens_per_second}};
      if (on_cpu) m["threads"] = step_threads;
      if (phase == "mask" && s.learn_mask) {
        m["target"] = r.target;
        m["expected_sparsity"] = r.gates.expected_sparsity;
        m["hard_sparsity"] = r.gates.hard_sparsity;
        m["undecided"] = r.gates.undecided;
        m[s.sparsity_control == "project" ? "shift" : "lambda1"] = r.multiplier;
      }
      metrics << m.dump() << "\n";
      metrics.flush();
    }
    if (progress) progress(r);
  };
  // Data parallel: the flag reduced in the last step, so that all ranks stop (and save) together.
  auto stop_requested = [&] { return distributed() ? stop_all_ : interrupt && interrupt->load(); };
  auto checkpoint = [&] {
    const NoInterruptScope finish_it;  // a checkpoint once begun is completed (also the one Ctrl-C asked for)
    check_replicas_agree(step);
    if (is_root()) save_checkpoint(step, phase);
    saved = step;
  };

  while (phase == "mask" && step < s.steps) {
    // --profile: the second step of this process (the first pays one-time costs), or the only one.
    const bool profiled = profile_ && profiled_.step < 0 && (step == first + 1 || step + 1 == s.steps);
    const Backend& backend = backend_for(base_.device());
    uint64_t mark = 0;
    if (profiled) {
      backend.synchronize();
      profile::set_enabled(true);
      mark = backend.profile_mark();
    }
    double loss = 0;
    try {
      loss = governed_step(false);
    } catch (const Interrupted& e) {
      profile::set_enabled(false);
      throw abandoned(e);
    } catch (...) {
      profile::set_enabled(false);
      throw;
    }
    if (profiled) {
      const uint64_t end = backend.profile_mark();
      profile::set_enabled(false);
      profiled_.step_ms = backend.profile_elapsed_ms(mark, end);  // before collect(), which releases marks
      profiled_.ops = profile::collect();
      profiled_.step = step;
      profiled_.threads = on_cpu ? step_threads : 0;
      const int64_t W = comm_ ? comm_->world_size() : 1, r = comm_ ? comm_->rank() : 0;
      profiled_.tokens = (s.batch * (r + 1) / W - s.batch * r / W) * s.seq * s.accum;  // this rank's share
    }
    ++step;
    report(loss);
    if (step % s.checkpoint_every == 0 || step == s.steps || stop_requested()) checkpoint();
    if (stop_requested()) return false;
  }
  mask_ = final_mask(gates_, s.target);
  summary_.mode = s.learn_mask ? s.sparsity_control : "none";
  summary_.target = s.target;
  summary_.end = gate_figures(host_gates(gates_), gates_.costs());
  summary_.mask_override = final_mask_override(gates_, mask_);
  fixed_heads_.clear(), fixed_neurons_.clear();
  for (const Tensor& z : mask_.z_heads) fixed_heads_.emplace_back(z.to(base_.dtype()).to(base_.device()));
  for (const Tensor& z : mask_.z_neurons) fixed_neurons_.emplace_back(z.to(base_.dtype()).to(base_.device()));
  if (phase == "mask") {
    note(fmt::format("final mask: {:.2f}% of the prunable size removed (target {:.2f}%); the gates held {:.2f}% "
                     "hard-closed, {:.2f}% undecided; the sort removed {:.2f}% that the gates held open",
                     100 * mask_.sparsity(), 100 * s.target, 100 * summary_.end.hard_sparsity,
                     100 * summary_.end.undecided, 100 * summary_.mask_override));
    phase = "recovery";
  }
  while (bank_ && step < s.steps + s.recovery_steps) {
    double loss = 0;
    try {
      loss = governed_step(true);
    } catch (const Interrupted& e) {
      throw abandoned(e);
    }
    ++step;
    report(loss);
    if (step % s.checkpoint_every == 0 || step == s.steps + s.recovery_steps || stop_requested()) checkpoint();
    if (stop_requested()) return false;
  }
  if (governor.trials() > 0)
    note(fmt::format("cpu threads: {} of this run's steps ran on fewer than {} threads ({} trial{}, {} kept; "
                     "engine/cpu/threads.h); the last on {}",
                     governor.steps_below_max(), governor.max_threads(), governor.trials(),
                     governor.trials() == 1 ? "" : "s", governor.kept(), governor.threads()));
  return true;
}

std::vector<nn::LayerHooks> OffloadTrainer::eval_hooks(int64_t domain, bool without_memory) const {
  KOFF_CHECK(!fixed_heads_.empty(), "eval_hooks before the final mask exists (run() first)");
  if (bank_ && !without_memory) {
    return bank_->hooks(Tensor::from_vector<int64_t>({domain}, {1}), &fixed_heads_, &fixed_neurons_);
  }
  std::vector<nn::LayerHooks> hooks(fixed_heads_.size());
  for (size_t l = 0; l < hooks.size(); ++l) hooks[l].head_gate = fixed_heads_[l], hooks[l].neuron_gate = fixed_neurons_[l];
  return hooks;
}

}  // namespace koff::offload
