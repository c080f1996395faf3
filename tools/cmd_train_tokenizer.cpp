// `koff train-tokenizer`: learns a byte-level BPE vocabulary from text files and writes a
// tokenizer.json that koff and Hugging Face `tokenizers` both read.
#include <fmt/core.h>

#include <memory>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "tokenizer/trainer.h"
#include "tools/cli.h"

namespace {

struct TrainOptions {
  std::vector<std::string> files;
  size_t vocab_size = 8192;
  std::string out;
  std::vector<std::string> special_tokens{"<|endoftext|>"};
  std::string bos;
  std::string pattern = "qwen2";
  uint64_t min_frequency = 2;
  bool nfc = false;
  int threads = 0;
};

int run(const TrainOptions& opt) {
  koff::BpeTrainerOptions options;
  options.vocab_size = opt.vocab_size;
  options.special_tokens = opt.special_tokens;
  auto pattern = koff::split_pattern_from_name(opt.pattern);
  if (!pattern) throw koff::TokenizerError(fmt::format("--pattern: unknown \"{}\" (llama3, qwen2, gpt2)", opt.pattern));
  options.pattern = *pattern;
  options.min_frequency = opt.min_frequency;
  options.nfc = opt.nfc;
  if (!opt.bos.empty()) options.bos_token = opt.bos;
  options.threads = opt.threads;
  koff::BpeTrainer trainer(options);
  for (const auto& f : opt.files) trainer.add_file(f);
  trainer.train_to_file(opt.out);
  // Read the result back: what we wrote must load.
  koff::Tokenizer tok = koff::Tokenizer::from_file(opt.out);
  fmt::print("koff train-tokenizer: {} bytes, {} distinct pieces -> {} tokens ({} merges) in {}\n",
             trainer.bytes_seen(), trainer.distinct_pieces(), tok.vocab_size(), tok.model().merges().size(), opt.out);
  return 0;
}

const bool registered = koff::cli::add_command(
    {"train-tokenizer", "learn a byte-level BPE vocabulary from text files, write tokenizer.json", [](CLI::App& sub) {
       auto opt = std::make_shared<TrainOptions>();
       sub.add_option("--files", opt->files, "UTF-8 text files to learn from")->required()->check(CLI::ExistingFile);
       sub.add_option("--vocab-size", opt->vocab_size, "tokens in all: special tokens + 256 bytes + merges")
           ->required();
       sub.add_option("--out", opt->out, "tokenizer.json to write")->required();
       sub.add_option("--special-tokens", opt->special_tokens, "special tokens, ids 0, 1, ... in order")
           ->delimiter(',')
           ->capture_default_str();
       sub.add_option("--bos", opt->bos, "a special token the post-processor puts before every sequence");
       sub.add_option("--pattern", opt->pattern,
                      "pre-tokenizer regex: qwen2 (single digits), llama3 (up to 3 digits) or gpt2")
           ->capture_default_str();
       sub.add_option("--min-frequency", opt->min_frequency, "never merge pairs seen fewer times")
           ->capture_default_str();
       sub.add_flag("--nfc", opt->nfc, "NFC-normalize the text (adds an NFC normalizer)");
       sub.add_option("--threads", opt->threads, "threads for counting (default: all cores)");
       return [opt] { return run(*opt); };
     }});

}  // namespace
