// `koff pretrain --config FILE --data DIR --out DIR`: trains a small base model from scratch (the
// embedded default model comes from tools/configs/embedded.json). Resumes from <out>/ckpt when
// present; Ctrl-C (SIGINT) or SIGTERM saves a checkpoint and stops.
#include <csignal>
#include <fstream>

#include "engine/nn/pretrain.h"
#include "engine/tensor/interrupt.h"
#include "tools/cli.h"
#include "tools/progress.h"

namespace {

const bool registered = koff::cli::add_command({"pretrain", "train a small base model from scratch (resumable)",
    [](CLI::App& sub) {
      struct Options {
        std::string config, data, out;
        int64_t steps = 0, stop_after = 0;
        bool fixed_threads = false;
      };
      auto o = std::make_shared<Options>();
      sub.add_option("--config", o->config, "JSON with \"tokenizer\", \"model\" (config.json fields) and \"train\"")
          ->required()->check(CLI::ExistingFile);
      sub.add_option("--data", o->data, "data directory: <domain>/train.txt and <domain>/valid.txt")->required();
      sub.add_option("--out", o->out, "run directory (tokenizer, checkpoints, metrics.jsonl, model/)")->required();
      sub.add_option("--steps", o->steps, "override the config's total number of steps");
      sub.add_option("--stop-after", o->stop_after, "checkpoint and stop after this many steps of this run");
      sub.add_flag("--fixed-threads", o->fixed_threads,
                   "run every step on the starting thread count (OMP_NUM_THREADS, else all cores); by default "
                   "fewer threads run while other processes hold cores, chosen by timing the steps (logged when "
                   "it acts)");
      return [o]() {
        std::ifstream in(o->config);
        nlohmann::json cfg;
        try {
          cfg = nlohmann::json::parse(in);
        } catch (const std::exception& e) {
          throw koff::Error(fmt::format("{}: not valid JSON: {}", o->config, e.what()));
        }
        for (const char* key : {"model", "train"})
          if (!cfg.contains(key)) throw koff::Error(fmt::format("{}: missing \"{}\" object", o->config, key));
        koff::nn::PretrainJob job;
        try {
          job.model = cfg.at("model");
          job.tokenizer = koff::nn::TokenizerSettings::from_json(cfg.value("tokenizer", nlohmann::json::object()));
          job.train = koff::nn::PretrainSettings::from_json(cfg.at("train"));
        } catch (const koff::Error& e) {
          throw koff::Error(fmt::format("{}: {}", o->config, e.what()));  // e.g. "train.steps: expected an integer"
        }
        KOFF_CHECK(o->steps >= 0, "--steps {}: must be positive", o->steps);
        KOFF_CHECK(o->stop_after >= 0, "--stop-after {}: must be positive", o->stop_after);
        if (o->steps > 0) job.train.steps = o->steps;
        job.data_dir = o->data;
        job.out_dir = o->out;
        job.stop_after = o->stop_after;
        job.adaptive_threads = !o->fixed_threads;
        job.interrupt = koff::cli::install_interrupt_handler();
        koff::cli::Progress progress;
        job.progress = [&](const koff::nn::PretrainReport& r) {
          if (!r.message.empty()) return progress.note(r.message);
          const double eta = r.tokens_per_second > 0 ? static_cast<double>(r.steps - r.step) * job.train.batch *
                                                           job.train.seq / r.tokens_per_second
                                                     : -1;
          if (r.step % job.train.log_every == 0 || r.step == r.steps)
            progress.report(fmt::format("step {}/{} | loss {:.4f} | lr {:.2e} | grad {:.2f} | {:.0f} tok/s | ETA {}",
                                        r.step, r.steps, r.loss, r.lr, r.grad_norm, r.tokens_per_second,
                                        koff::cli::format_duration(eta)));
        };
        std::vector<std::pair<std::string, double>> ppl;
        try {
          ppl = koff::nn::pretrain(job);
        } catch (const koff::Interrupted& e) {  // inside a step or an evaluation: the step is abandoned
          throw koff::Interrupted(fmt::format("{}: the last checkpoint in {}/ckpt is kept; run the same command again "
                                              "to resume",
                                              e.what(), o->out));
        } catch (const koff::Error& e) {
          const std::string m = e.what();  // the model config's errors name the config file
          if (m.rfind("pretrain config 'model'", 0) == 0) throw koff::Error(o->config + ": " + m);
          throw;
        }
        progress.finish();
        if (!ppl.empty()) {
          fmt::print("valid perplexity of {}/model:\n", o->out);
          for (const auto& [name, p] : ppl) fmt::print("  {:<8} {:8.2f}\n", name, p);
        }
        return 0;
      };
    }});

}  // namespace
